"""The pairs -> retrieval protocol, IR metrics (hand-computed toy case, via ir-measures), exact search,
and the retrieval grid with the real m3e-small encoder, real FAISS and real BM25."""

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import pytest

from embedkit.encoder import Encoder, l2_normalize
from embedkit.errors import InputError
from embedkit.evaluation.data import PairSet, load_task
from embedkit.evaluation.retrieval import (
    build_faiss,
    exact_search,
    ir_metrics,
    retrieval_set,
)
from embedkit.evaluation.retrieval_grid import check_modes, run_retrieval_grid
from embedkit.evaluation.retrieval_report import retrieval_eval

from .conftest import M3E, STS


def _pairs(s1, s2, y, task="T"):
    return PairSet(task=task, split="test", path="-", sentences1=s1, sentences2=s2,
                   scores=np.asarray(y, dtype=np.float64))


def test_protocol_binary_labels():
    ps = _pairs(["q1", "q1", "q2", "q3", "q1", "q4"], ["a", "b", "a", "c", "a", "d"], [1, 0, 1, 0, 1, 1])
    rs = retrieval_set(ps)
    assert rs.corpus == ["a", "b", "c", "d"]
    assert rs.queries == ["q1", "q2", "q4"]  # q3 has no positive pair
    assert rs.relevant == [[0], [0], [3]]  # duplicate positive pairs count once
    assert rs.threshold == 1.0 and rs.n_positive_pairs == 4
    assert retrieval_set(ps, max_queries=2).queries == ["q1", "q2"]
    assert retrieval_set(ps, max_queries=2).corpus == rs.corpus


def test_protocol_scale_labels():
    ps = _pairs(["q1", "q1", "q2", "q3"], ["a", "b", "c", "a"], [4.0, 4.6, 3.99, 5.0], task="STS-B")
    rs = retrieval_set(ps)
    assert rs.threshold == 4.0
    assert rs.queries == ["q1", "q3"] and rs.relevant == [[0, 1], [0]]
    with pytest.raises(InputError, match="no positive pairs"):
        retrieval_set(_pairs(["q"], ["a"], [0]))
    with pytest.raises(InputError, match="max_queries"):
        retrieval_set(ps, max_queries=0)


def test_metrics_hand_computed():
    rankings = [["d3", "d1", "d2"], [], ["d5", "d6"], ["x"] * 3 + ["y", "z", "a", "b", "c", "d", "e", "f", "r"]]
    relevant = [["d1", "d2"], ["d0"], ["d5"], ["r"]]
    m = ir_metrics(rankings, relevant, per_query=True)
    # q0: first relevant at rank 2; both relevant in the top 10; DCG 1/log2(3) + 1/log2(4) over ideal 1 + 1/log2(3)
    # q1: no results -> 0 everywhere.  q2: perfect.  q3 (duplicate "x" counted once): r at rank 10
    ndcg0 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg3 = (1 / math.log2(11)) / 1.0
    assert m["mrr@10"] == pytest.approx((0.5 + 0 + 1 + 0.1) / 4)
    assert m["recall@1"] == pytest.approx((0 + 0 + 1 + 0) / 4)
    assert m["recall@10"] == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert m["ndcg@10"] == pytest.approx((ndcg0 + 0 + 1 + ndcg3) / 4)
    np.testing.assert_allclose(m["per_query"]["mrr@10"], [0.5, 0, 1, 0.1])
    assert m["n_queries"] == 4
    # recall@1 with two relevant documents and the first one at rank 1: 1/2
    assert ir_metrics([["d1", "d2"]], [["d1", "d2"]])["recall@1"] == pytest.approx(0.5)
    # relevant at rank 11 is outside @10
    assert ir_metrics([[f"n{i}" for i in range(10)] + ["r"]], [["r"]])["mrr@10"] == 0.0
    with pytest.raises(InputError, match="no relevant"):
        ir_metrics([["a"]], [[]])
    with pytest.raises(InputError, match="rankings for 1"):
        ir_metrics([["a"]], [["a"], ["b"]])


def test_exact_search_matches_faiss_flat():
    rng = np.random.default_rng(0)
    docs = l2_normalize(rng.standard_normal((500, 24)).astype(np.float32))
    qs = l2_normalize(rng.standard_normal((40, 24)).astype(np.float32))
    D, I = exact_search(docs, qs, 10, block=16)
    index, factory = build_faiss("flat", docs)
    assert factory == "Flat"
    D2, I2 = index.search(qs, 10)
    np.testing.assert_array_equal(I, I2)
    np.testing.assert_allclose(D, D2, rtol=1e-5)
    brute = np.argsort(-(qs @ docs.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(I, brute)
    hnsw, f = build_faiss("hnsw", docs)
    assert f.startswith("HNSW") and faiss.downcast_index(hnsw).hnsw.efSearch >= 64
    with pytest.raises(InputError, match="does not build"):
        build_faiss("PQ7", docs)  # 24 is not divisible by 7


def test_check_modes():
    assert check_modes(["dense", "weighted:0.3", "dense"]) == ["dense", "weighted:0.3"]
    for bad in (["fancy"], ["weighted:2"], ["weighted:x"], []):
        with pytest.raises(InputError):
            check_modes(bad)


@pytest.mark.slow
def test_grid_real_model_against_numpy_oracle(tmp_path):
    """Flat dense rows equal exact numpy cosine search over m3e-small vectors; lexical rows equal
    BM25Index on the same corpus; every mode and index type produces a row; the report is written."""
    limit = 160
    out = retrieval_eval(STS, out_dir=tmp_path / "rep", echo=lambda *_: None, tasks=["STS-B"],
                         model=str(M3E), limit=limit, reducers=["none", "pca:32"],
                         index_types=["flat", "hnsw", "ivf-flat"], modes=["dense", "lexical", "rrf", "hybrid"],
                         cache_dir=tmp_path / "cache", latency_queries=5)
    res = out["results"]
    rows = {(r["reducer"], r["index"], r["mode"]): r for r in res["rows"]}
    assert len(rows) == 1 + 2 * 3 * 3
    # oracle: encode independently, exact cosine with numpy, metrics by ir_metrics
    ps = load_task(STS, "STS-B", ["test"], limit=limit)["test"]
    rs = retrieval_set(ps)
    enc = Encoder(str(M3E), max_length=64)
    d = l2_normalize(enc.encode(rs.corpus, normalize=False))
    q = l2_normalize(enc.encode(rs.queries, normalize=False))
    ranks = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :10]
    want = ir_metrics(ranks.tolist(), rs.relevant)
    flat = rows[("none", "flat", "dense")]
    for k in ("mrr@10", "recall@1", "recall@10", "ndcg@10"):
        assert flat[k] == pytest.approx(want[k], abs=1e-9)
    assert flat["recall_vs_exact@10"] == 1.0
    assert flat["bytes_per_vector"] >= 512 * 4
    assert rows[("pca:32", "flat", "dense")]["bytes_per_vector"] < 40 * 4
    assert flat["n_queries"] == len(rs.queries) and flat["n_corpus"] == len(rs.corpus)
    assert want["mrr@10"] > 0.6  # m3e-small really retrieves paraphrases
    from embedkit.lexical import BM25Index

    lex = BM25Index().fit(range(len(rs.corpus)), rs.corpus).search(rs.queries, k=10)
    lw = ir_metrics([[i for _, i in h] for h in lex], rs.relevant)
    assert rows[(None, "bm25", "lexical")]["mrr@10"] == pytest.approx(lw["mrr@10"])
    for spec in ("none", "pca:32"):
        hy = rows[(spec, "flat", "hybrid")]
        assert 0.0 <= hy["weight"] <= 1.0 and hy["tuned_on"] == "valid"
    assert {t["reducer"] for t in res["tuning"]} == {"none", "pca:32"}
    # the report files
    saved = json.loads(out["paths"]["results"].read_text(encoding="utf-8"))
    assert saved["rows"][0]["task"] == "STS-B"
    assert "MRR@10" in out["paths"]["markdown"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in out["paths"]["html"].read_text(encoding="utf-8")
    # a re-run hits the encoding cache
    again = run_retrieval_grid(STS, tasks=["STS-B"], model=str(M3E), limit=limit, modes=["dense"],
                               cache_dir=tmp_path / "cache", latency_queries=2)
    assert again["cache"]["misses"] == 0
    assert again["rows"][0]["mrr@10"] == pytest.approx(flat["mrr@10"])


def test_grid_bad_input(tmp_path):
    with pytest.raises(InputError, match="mode"):
        run_retrieval_grid(STS, tasks=["STS-B"], modes=["sparse"])
    with pytest.raises(InputError, match="unknown task"):
        run_retrieval_grid(STS, tasks=["NOPE"])
    with pytest.raises(InputError, match="depth"):
        run_retrieval_grid(STS, tasks=["STS-B"], depth=5)
    with pytest.raises(InputError, match="does not exist"):
        run_retrieval_grid(tmp_path / "missing")


@pytest.mark.slow
def test_cli_eval_retrieval(tmp_path):
    from click.testing import CliRunner

    from embedkit.cli import cli

    args = ["-q", "eval", "--retrieval", "--data", str(STS), "--tasks", "STS-B", "--limit", "80",
            "--models", str(M3E), "--reducers", "none", "--index", "flat", "--mode", "dense,lexical,rrf",
            "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--no-plots"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output + r.stderr
    assert "MRR@10" in r.stdout and "| STS-B | none | flat | dense |" in r.stdout
    res = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert {row["mode"] for row in res["rows"]} == {"dense", "lexical", "rrf"}
    bad = CliRunner().invoke(cli, args[:-7] + ["--mode", "sparse"], catch_exceptions=False)
    assert bad.exit_code == 1 and "mode 'sparse'" in bad.stderr
