"""The evaluation end to end: the cache-hit path, both protocols, a real m3e-small run checked
against a direct computation, the CLI and its errors, and the HTML report in headless Chromium."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from embedkit.cli import main
from embedkit.encoder import Encoder
from embedkit.errors import InputError
from embedkit.evaluation.data import read_pairs
from embedkit.evaluation.evaluator import STSEvaluator, expand_reducers, run_grid
from embedkit.evaluation.report import match_published

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "sts-zh"
TINY = str(SHARED / "models" / "tiny-random-bert-zh")
M3E = str(SHARED / "models" / "m3e-small")
CHROMIUM = "/usr/bin/chromium"


def _head(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """STS-B (train + test slices) and a user's own task MYPAIRS (BQ rows, test only)."""
    root = tmp_path_factory.mktemp("sts")
    _head(DATA / "STS-B" / "STS-B.test.data", root / "STS-B" / "STS-B.test.data", 60)
    _head(DATA / "STS-B" / "STS-B.train.data", root / "STS-B" / "STS-B.train.data", 60)
    _head(DATA / "BQ" / "BQ.test.data", root / "MYPAIRS" / "MYPAIRS.test.data", 50)
    return root


class CountingEncoder:
    """Wraps a real Encoder and counts what reaches encode()."""

    instances: list = []

    def __init__(self, model, **kw):
        self.inner = Encoder(model, **kw)
        self.calls = 0
        self.texts: list[str] = []
        CountingEncoder.instances.append(self)

    def describe(self):
        return self.inner.describe()

    def encode(self, texts, **kw):
        self.calls += 1
        self.texts += list(texts)
        return self.inner.encode(texts, **kw)


@pytest.fixture(scope="module")
def tiny_encoder():
    return Encoder(TINY)


def test_cache_hit_path_does_not_call_the_encoder(small_data, tmp_path):
    def factory(model, **kw):
        return CountingEncoder(model, **kw)

    kw = dict(tasks=["STS-B", "MYPAIRS"], models=[TINY], splits=["test"], encoder_factory=factory,
              cache_dir=tmp_path / "cache", progress=False)
    CountingEncoder.instances.clear()
    first = run_grid(small_data, reducers=["none", "whitening:16"], **kw)
    enc = CountingEncoder.instances[-1]
    assert enc.calls == 1  # every text list pooled into one call
    expected = set()
    for task in ("STS-B", "MYPAIRS"):
        ps = read_pairs(small_data / task / f"{task}.test.data")
        expected |= set(ps.sentences1) | set(ps.sentences2)
    assert sorted(enc.texts) == sorted(expected)  # each distinct sentence encoded exactly once
    assert first["cache"]["misses"] == 2 and first["cache"]["hits"] == 0

    CountingEncoder.instances.clear()
    second = run_grid(small_data, reducers=["none", "whitening:16", "pca:8", "jl:8"], **kw)
    assert CountingEncoder.instances[-1].calls == 0  # cache hit: no re-encoding for new reducers
    assert second["cache"]["hits"] == 2 and second["cache"]["n_encoded"] == 0
    a = {(c["task"], c["reducer"]): c["spearman"] for c in first["cells"]}
    b = {(c["task"], c["reducer"]): c["spearman"] for c in second["cells"]}
    for k, v in a.items():
        assert b[k] == pytest.approx(v, abs=1e-9)
    assert {c["reducer"] for c in second["cells"]} == {"none", "whitening:16", "pca:8", "jl:8"}
    assert {c["dim"] for c in second["cells"] if c["reducer"] == "pca:8"} == {8}


def test_fit_train_protocol_and_its_errors(small_data, tiny_encoder):
    res = run_grid(small_data, tasks=["STS-B"], models=[TINY], reducers=["none", "whitening:16"],
                   protocol="fit-train", encoder_factory=lambda m, **kw: tiny_encoder, progress=False)
    assert res["protocol"] == "fit-train" and res["settings"]["splits"] == ["test"]
    w = next(c for c in res["cells"] if c["reducer"] == "whitening:16")
    assert w["fit"] == {"on": "train", "n_vectors": 120} and w["split"] == "test"
    assert any(d.get("role") == "fit" and d["split"] == "train" for d in res["data"])
    with pytest.raises(InputError, match="'MYPAIRS' has no train split"):
        run_grid(small_data, tasks=["MYPAIRS"], models=[TINY], reducers=["whitening:16"],
                 protocol="fit-train", encoder_factory=lambda m, **kw: tiny_encoder)
    with pytest.raises(InputError, match="protocol 'best'"):
        run_grid(small_data, protocol="best", encoder_factory=lambda m, **kw: tiny_encoder)
    # a reducer asking for more dimensions than the vectors have: the cell records the error
    res = run_grid(small_data, tasks=["MYPAIRS"], models=[TINY], reducers=["whitening:500"],
                   encoder_factory=lambda m, **kw: tiny_encoder)
    assert "500" in res["cells"][0]["error"] and np.isnan(res["cells"][0]["spearman"])


def test_expand_reducers():
    assert expand_reducers(["none", "whitening", "jl:8"], [4, 8]) == ["none", "whitening:4", "whitening:8", "jl:8"]
    with pytest.raises(InputError, match="'flow:8'"):
        expand_reducers(["flow:8"])
    with pytest.raises(InputError, match="'pca:x'"):
        expand_reducers(["pca:x"])


def test_real_m3e_slice_matches_a_direct_computation():
    """embedkit eval's numbers vs sentence-transformers encode + cosine + scipy Spearman."""
    from sentence_transformers import SentenceTransformer

    n = 150
    res = run_grid(DATA, tasks=["STS-B", "LCQMC"], models=[M3E], splits=["test"], limit=n,
                   reducers=["none", "whitening:64"], progress=False)
    cells = {(c["task"], c["reducer"]): c for c in res["cells"]}
    st = SentenceTransformer(M3E, device="cpu")
    st.max_seq_length = 64
    for task in ("STS-B", "LCQMC"):
        ps = read_pairs(DATA / task / f"{task}.test.data", limit=n)
        a = st.encode(ps.sentences1, batch_size=32, convert_to_numpy=True)
        b = st.encode(ps.sentences2, batch_size=32, convert_to_numpy=True)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        direct = stats.spearmanr(cos, ps.scores).statistic
        assert cells[(task, "none")]["n_pairs"] == n
        assert abs(cells[(task, "none")]["spearman"] - direct) * 100 < 1.0
        # whitening as the paper computes it: fit on both sides of every pair, keep 64 components
        x = np.concatenate([a, b]).astype(np.float64)
        u, s, _ = np.linalg.svd(np.cov(x.T))
        kernel, mu = (u / np.sqrt(s))[:, :64], x.mean(0)
        wa, wb = (a - mu) @ kernel, (b - mu) @ kernel
        wcos = (wa * wb).sum(1) / np.linalg.norm(wa, axis=1) / np.linalg.norm(wb, axis=1)
        wdirect = stats.spearmanr(wcos, ps.scores).statistic
        assert abs(cells[(task, "whitening:64")]["spearman"] - wdirect) * 100 < 1.0
        if task == "STS-B":  # the library API on a plain SentenceTransformer gives the same number
            got = STSEvaluator(ps.sentences1, ps.sentences2, ps.scores)(st)
            assert abs(got["spearman"] - direct) * 100 < 1.0 and got["n_pairs"] == n
    assert cells[("STS-B", "none")]["spearman"] > 0.5  # a trained Chinese encoder, not noise


def test_published_numbers_are_matched_with_a_delta():
    cell = {"model_name": "bert-base-chinese", "pooling": "first-last-avg", "reducer": "whitening:256",
            "reducer_kind": "whitening", "task": "STS-B", "split": "test", "spearman": 0.70}
    rows = match_published({"cells": [cell, dict(cell, split="valid")]}, __import__(
        "embedkit.evaluation.report", fromlist=["load_published"]).load_published())
    assert len(rows) == 1
    assert rows[0]["published"] == pytest.approx(69.45) and rows[0]["delta"] == pytest.approx(0.55)


# --------------------------------------------------------------------------------------------
# CLI + report + browser
# --------------------------------------------------------------------------------------------
def run_cli(argv) -> int:
    """Run ``embedkit ARGV`` in-process; return its exit status."""
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="module")
def cli_report(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cache = tmp_path_factory.mktemp("cache")
    code = run_cli(["-q", "eval", "--data", str(small_data), "--tasks", "STS-B,MYPAIRS", "--models", TINY,
                    "--reducers", "none,whitening,pca,jl", "--dims", "8,16", "--split", "test",
                    "-o", str(out), "--cache-dir", str(cache), "--no-progress"])
    assert code == 0
    return out


def test_cli_writes_results_markdown_and_html(cli_report):
    res = json.loads((cli_report / "results.json").read_text(encoding="utf-8"))  # strict JSON, no NaN
    assert res["protocol"] == "paper" and res["settings"]["reducers"] == [
        "none", "whitening:8", "whitening:16", "pca:8", "pca:16", "jl:8", "jl:16"]
    assert len(res["cells"]) == 2 * 7
    assert res["models"][0]["name"] == "tiny-random-bert-zh" and res["versions"]["numpy"]
    assert all(len(d["sha256"]) == 64 for d in res["data"])
    assert {"encode_s", "reduce_score_s", "report_s", "grid_total_s"} <= set(res["timings"])
    md = (cli_report / "report.md").read_text(encoding="utf-8")
    assert "protocol: **paper**" in md
    assert "| model | pooling | reducer | dim | STS-B | MYPAIRS | avg | w-avg |" in md
    html = (cli_report / "report.html").read_text(encoding="utf-8")
    assert html.count("src='data:image/png;base64,") == 2


def test_report_html_opens_in_headless_chromium_with_images_loaded(cli_report, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           (cli_report / "report.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'id="img-status"[^>]*data-loaded="(\d+)"[^>]*data-total="(\d+)"', dom)
    assert m, dom[-2000:]
    assert m.group(1) == m.group(2) == "2"  # both figures decoded (naturalWidth > 0)
    assert "Spearman × 100, test split" in dom


def test_cli_prints_the_table_and_errors_are_one_line(small_data, tmp_path, capsys):
    assert run_cli(["-q", "eval", "--data", str(small_data), "--tasks", "MYPAIRS", "--models", TINY,
                    "--reducers", "none", "-o", str(tmp_path / "o"), "--no-cache", "--no-plots",
                    "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| tiny-random-bert-zh | model | none | 128 |" in out
    cases = [(["--tasks", "NOPE"], "unknown task 'NOPE'"),
             (["--data", str(tmp_path / "missing")], "does not exist"),
             (["--reducers", "whitening:abc"], "'whitening:abc'")]
    for extra, msg in cases:
        code = run_cli(["eval", "--data", str(small_data), "--models", TINY, "-o", str(tmp_path / "x"),
                        "--no-cache"] + extra)
        assert code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("embedkit: error:") and msg in err[-1], err
