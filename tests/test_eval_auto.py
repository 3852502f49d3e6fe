"""`embedkit eval` with `auto` and the 0/1-task metrics: auto chooses on valid only (a crafted split
where valid and test disagree), calibration is fitted on valid and scored on test, the report shows the
grid, the choice and the reliability diagram; the CLI options with a real (tiny) model."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from embedkit.calibration import Calibrator, best_threshold, expected_calibration_error
from embedkit.cli import main
from embedkit.evaluation.evaluator import run_grid
from embedkit.evaluation.report import write_report
from embedkit.reducers import WhiteningReducer

from .conftest import STS, TINY, FakeEncoder


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _write(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{a}\t{b}\t{y:.6f}\n" for a, b, y in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """Anisotropic vectors; valid labels = cosine after whitening (fitted on valid), test labels = raw
    cosine.  Valid says whitening, test says none."""
    rng = np.random.default_rng(0)
    d, n = 8, 300
    vecs = rng.standard_normal((4 * n, d)) * np.array([9, 5, 3, 1, 0.5, 0.3, 0.2, 0.1]) + 3.0
    texts = [f"句子{i}" for i in range(4 * n)]
    table = dict(zip(texts, vecs))
    va, vb, ta, tb = (vecs[i * n:(i + 1) * n] for i in range(4))
    w = WhiteningReducer().fit(np.concatenate([va, vb]))
    root = tmp_path_factory.mktemp("crafted")
    _write(root / "CRAFT" / "CRAFT.valid.data",
           zip(texts[:n], texts[n:2 * n], _cos(w.transform(va), w.transform(vb))))
    _write(root / "CRAFT" / "CRAFT.test.data", zip(texts[2 * n:3 * n], texts[3 * n:], _cos(ta, tb)))
    return root, FakeEncoder(d, table)


@pytest.mark.parametrize("protocol", ["fit-valid", "paper"])
def test_auto_chooses_on_valid_never_on_test(crafted, protocol):
    root, enc = crafted
    res = run_grid(root, tasks=["CRAFT"], models=["fake"], reducers=["none", "whitening", "auto"],
                   protocol=protocol, splits=["test"], encoder_factory=lambda m, **kw: enc, progress=False)
    cells = {c["reducer"]: c for c in res["cells"] if c["split"] == "test"}
    auto = cells["auto"]["auto"]
    assert auto["choice"] == "whitening" and auto["tuned_on"] == "valid"
    best_valid = max(auto["grid"], key=lambda g: g["spearman"])
    assert best_valid["spec"] == "whitening" and best_valid["spearman"] == pytest.approx(1.0)
    # test disagrees: none is perfect there, and auto did not peek
    assert cells["none"]["spearman"] == pytest.approx(1.0)
    assert cells["auto"]["spearman"] < cells["none"]["spearman"] - 0.05
    assert cells["auto"]["spearman"] == pytest.approx(cells["whitening"]["spearman"], abs=1e-9)
    assert any(d.get("role") == "tune" and d["split"] == "valid" for d in res["data"])


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    rng = np.random.default_rng(1)
    d, n = 16, 200
    table, files = {}, {}
    root = tmp_path_factory.mktemp("bin")
    for split in ("valid", "test"):
        y = rng.integers(0, 2, n)
        a = rng.standard_normal((n, d))
        b = a * (0.4 + 0.5 * y)[:, None] + rng.standard_normal((n, d))
        rows = []
        for i in range(n):
            ka, kb = f"{split}a{i}", f"{split}b{i}"
            table[ka], table[kb] = a[i], b[i]
            rows.append((ka, kb, y[i]))
        files[split] = (a, b, y)
        _write(root / "SAME" / f"SAME.{split}.data", rows)
    return root, FakeEncoder(d, table), files


def test_binary_task_gets_auc_threshold_accuracy_f1_and_ece(binary, tmp_path):
    root, enc, files = binary
    res = run_grid(root, tasks=["SAME"], models=["fake"], reducers=["none"], protocol="fit-valid",
                   encoder_factory=lambda m, **kw: enc, progress=False)
    (cell,) = res["cells"]
    k = cell["classification"]
    (va, vb, vy), (ta, tb, ty) = files["valid"], files["test"]
    vs, ts = _cos(va, vb), _cos(ta, tb)
    assert k["auc"] == pytest.approx(roc_auc_score(ty, ts))
    thr, _ = best_threshold(vs, vy, "accuracy")  # fitted on valid ...
    assert k["accuracy_threshold"] == pytest.approx(thr)
    assert k["accuracy"] == pytest.approx(((ts >= thr) == ty).mean())  # ... scored on test
    assert k["accuracy_best_in_hindsight"] == pytest.approx(best_threshold(ts, ty, "accuracy")[1])
    iso = Calibrator().fit(vs, vy)
    assert k["ece"] == pytest.approx(expected_calibration_error(iso.predict_proba(ts), ty))
    assert k["calibrated_on"] == "valid" and k["n_calibration_pairs"] == 200
    paths = write_report(res, tmp_path / "r")
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "## Same / not the same" in md and "| fake | model | none | SAME | test |" in md
    html = paths["html"].read_text(encoding="utf-8")
    assert html.count("src='data:image/png;base64,") == 3 and "Reliability of the calibrated" in html


def test_cli_auto_fit_valid_with_a_real_model(tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("valid", "test"):
        src = (STS / "BQ" / f"BQ.{split}.data").read_text(encoding="utf-8").split("\n")[:80]
        (root / "BQ").mkdir(parents=True, exist_ok=True)
        (root / "BQ" / f"BQ.{split}.data").write_text("\n".join(src) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    try:
        main(["-q", "eval", "--data", str(root), "--models", str(TINY), "--reducers", "none,auto",
              "--protocol", "fit-valid", "--normalize", "nfkc", "-o", str(out), "--no-cache", "--no-plots",
              "--no-progress"])
    except SystemExit as e:
        assert e.code in (0, None)
    printed = capsys.readouterr().out
    assert "## Spearman × 100, test split" in printed and "## Reducer chosen by auto" in printed
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["protocol"] == "fit-valid" and res["settings"]["normalize"]["mode"] == "nfkc"
    auto = next(c for c in res["cells"] if c["reducer"] == "auto")
    assert auto["auto"]["choice"] in [g["spec"] for g in auto["auto"]["grid"]]
    assert auto["classification"]["calibrated_on"] == "valid"
    assert "The auto grid" in (out / "report.md").read_text(encoding="utf-8")
