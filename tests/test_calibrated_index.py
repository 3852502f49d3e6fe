"""Calibrated similarity through the index: real m3e-small, real LCQMC pairs, search probabilities."""

import json

import numpy as np
import pytest

from embedkit.calibration import Calibrator
from embedkit.cli import main
from embedkit.corpus import Doc
from embedkit.errors import IndexFormatError, InputError
from embedkit.index import EmbedIndex

from .conftest import DEMO_CORPUS, STS


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cal") / "lcqmc.tsv"
    lines = (STS / "LCQMC" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:400]
    p.write_text("\n".join(lines) + "\n这一行没有标签\n", encoding="utf-8")  # one malformed row, counted
    return p


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, m3e_encoder, pairs_file):
    from embedkit.corpus import iter_corpus

    d = tmp_path_factory.mktemp("idx") / "demo"
    idx = EmbedIndex.build(d, iter_corpus(DEMO_CORPUS), encoder=m3e_encoder)
    summary = idx.calibrate(pairs_file)
    return d, idx, summary


def test_calibration_matches_the_library_fit_and_survives_reload(calibrated, pairs_file, m3e_encoder):
    d, idx, summary = calibrated
    assert summary["n_pairs"] == 400 and sum(summary["skipped_rows"].values()) == 1
    from embedkit.calibration import read_labelled_pairs

    ps = read_labelled_pairs(pairs_file)
    a, b = m3e_encoder.encode(ps.sentences1), m3e_encoder.encode(ps.sentences2)
    oracle = Calibrator().fit((a * b).sum(1), ps.scores)  # cosine on normalised vectors: the index's score
    assert summary["threshold"] == pytest.approx(oracle.threshold_, abs=1e-5)
    again = EmbedIndex.load(d, encoder=m3e_encoder)
    assert again.query_path.calibration.threshold_ == pytest.approx(oracle.threshold_, abs=1e-5)
    sims = again.similarity([("花呗怎么还款", "花呗如何还款"), ("花呗怎么还款", "今天天气很好")])
    assert sims[0]["probability"] > sims[1]["probability"] and sims[0]["match"] and not sims[1]["match"]
    probs = oracle.predict_proba(np.array([s["score"] for s in sims]))
    np.testing.assert_allclose([s["probability"] for s in sims], probs, atol=1e-5)


def test_search_hits_carry_probability_and_min_probability_filters(calibrated, capsys):
    d, idx, _ = calibrated
    hits = idx.search("如何提升信用卡的额度？", 10)[0]
    assert all(0 <= h.probability <= 1 and isinstance(h.match, bool) for h in hits)
    assert [h.probability for h in hits] == sorted((h.probability for h in hits), reverse=True)  # monotone map
    kept = idx.search("如何提升信用卡的额度？", 10, min_probability=0.5)[0]
    assert kept == [h for h in hits if h.probability >= 0.5]
    with pytest.raises(SystemExit) as ex:
        main(["-q", "search", str(d), "如何提升信用卡的额度？", "-k", "3", "--json", "--min-probability", "0.5"])
    assert ex.value.code == 0
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    assert all(h["probability"] >= 0.5 and "match" in h for h in out["hits"])


def test_mismatched_calibration_is_refused(calibrated, tmp_path, m3e_encoder):
    import shutil

    d, _, _ = calibrated
    moved = tmp_path / "other"
    shutil.copytree(d, moved)
    gen = moved / (moved / "CURRENT").read_text().strip()
    cal = json.loads((gen / "calibration.json").read_text())
    cal["query_path"]["reducer"] = "whitening:256"
    (gen / "calibration.json").unlink()  # a hard link shared with the original: replace, never edit
    (gen / "calibration.json").write_text(json.dumps(cal))
    with pytest.raises(IndexFormatError, match="calibration was fitted for another query path .*reducer"):
        EmbedIndex.load(moved, encoder=m3e_encoder)


def test_bad_calibration_inputs(tmp_path, m3e_encoder):
    idx = EmbedIndex.build(tmp_path / "i", [Doc("a", "信用卡"), Doc("b", "借呗")], encoder=m3e_encoder)
    few = tmp_path / "few.tsv"
    few.write_text("一\t二\t1\n三\t四\t0\n", encoding="utf-8")
    with pytest.raises(InputError, match="2"):
        idx.calibrate(few)
    with pytest.raises(InputError, match="needs a calibrated index.*embedkit calibrate"):
        idx.search("信用卡", 1, min_probability=0.5)
