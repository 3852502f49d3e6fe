"""One contract for every index backend: build, save, load, add, delete, search, filters, recall.

Vectors come from a deterministic fake encoder (this tests the index layer; the real-model proof is
tests/test_cli.py). Recall@10 of approximate backends is measured against exact numpy search."""

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.index import EmbedIndex

from .conftest import FakeEncoder, clustered_vectors

BACKENDS = ["flat", "hnsw", "ivf-flat", "ivf-pq"]
N, DIM, NQ, K = 3000, 64, 100, 10


@pytest.fixture(scope="module")
def data():
    x = clustered_vectors(N + NQ, DIM, seed=5)
    docs = [Doc(f"doc-{i}", f"text {i}", {"group": f"g{i % 3}", "even": i % 2 == 0}) for i in range(N)]
    table = {d.text: x[i] for i, d in enumerate(docs)}
    queries = x[N:]
    return docs, table, queries


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top_k(docs_x, q, k):
    s = _normalize(q) @ _normalize(docs_x).T
    return np.argsort(-s, axis=1)[:, :k]


@pytest.fixture(scope="module", params=BACKENDS)
def built(request, data, tmp_path_factory):
    docs, table, _ = data
    d = tmp_path_factory.mktemp(request.param) / "idx"
    idx = EmbedIndex.build(d, iter(docs), encoder=FakeEncoder(DIM, table), index=request.param, chunk_size=700)
    return request.param, d, idx


def _ids(hits):
    return [[h.id for h in row] for row in hits]


def test_build_records_manifest(built, data):
    kind, d, idx = built
    m = idx.manifest
    assert m["count"] == N and len(idx) == N and m["dim"] == DIM and m["metric"] == "cosine"
    assert m["index"]["type"] == kind and m["encoder"]["model"] == "fake"
    assert {"faiss", "numpy", "embedkit"} <= set(m["versions"])
    assert (d / "CURRENT").is_file() and not list(d.glob(".tmp-gen-*"))


def test_recall_at_10_against_exact_numpy(built, data):
    kind, _, idx = built
    docs, table, queries = data
    x = np.stack([table[doc.text] for doc in docs])
    truth = exact_top_k(x, queries, K)
    got = _ids(idx.search_vectors(_normalize(queries), K))
    recall = np.mean([len({f"doc-{j}" for j in t} & set(g)) / K for t, g in zip(truth, got)])
    if kind == "flat":
        assert recall == 1.0
    else:
        assert recall >= 0.9, f"{kind} recall@10 = {recall:.3f}"
    assert all(len(row) == K for row in got)


def test_save_load_round_trip_identical(built, data):
    kind, d, idx = built
    _, table, queries = data
    again = EmbedIndex.load(d, encoder=FakeEncoder(DIM, table))
    a = idx.search_vectors(_normalize(queries[:20]), K)
    b = again.search_vectors(_normalize(queries[:20]), K)
    assert _ids(a) == _ids(b)
    np.testing.assert_array_equal([[h.score for h in r] for r in a], [[h.score for h in r] for r in b])
    assert again.manifest == idx.manifest


def test_filters_return_only_matching_metadata(built, data):
    _, _, idx = built
    _, _, queries = data
    hits = idx.search_vectors(_normalize(queries[:10]), K, filter={"group": "g1", "even": True})
    for row in hits:
        assert row, "filtered search returned nothing"
        for h in row:
            assert h.metadata["group"] == "g1" and h.metadata["even"] is True
    assert idx.search_vectors(_normalize(queries[:2]), K, filter={"group": "nope"}) == [[], []]


def test_scores_are_sorted_and_ids_are_strings(built, data):
    _, _, idx = built
    _, _, queries = data
    for row in idx.search_vectors(_normalize(queries[:10]), K):
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(h.id, str) and h.id.startswith("doc-") for h in row)


def test_add_then_delete_then_reload(built, data, tmp_path):
    kind, d, _ = built
    _, table, queries = data
    import shutil

    work = tmp_path / "copy"
    shutil.copytree(d, work)
    enc = FakeEncoder(DIM, table)
    idx = EmbedIndex.load(work, encoder=enc)
    new_vec = queries[0] * 3
    enc.table["新文档"] = new_vec
    assert idx.add([Doc("new-1", "新文档", {"group": "new"})]) == 1
    assert len(idx) == N + 1
    top = idx.search_vectors(_normalize(new_vec[None]), 1)[0][0]
    assert top.id == "new-1" and top.metadata == {"group": "new"}
    first = idx.search_vectors(_normalize(queries[:5]), K)
    victims = sorted({h.id for row in first for h in row[:3]} | {"new-1"})
    assert idx.delete(victims) == len(victims)
    assert len(idx) == N + 1 - len(victims)
    for fresh in (idx, EmbedIndex.load(work, encoder=enc)):
        assert len(fresh) == N + 1 - len(victims)
        for row in fresh.search_vectors(_normalize(queries[:5]), K):
            assert not {h.id for h in row} & set(victims)
            assert len(row) == K  # deleted documents never shrink a result list
    with pytest.raises(InputError, match="'new-1' is not in the index"):
        idx.delete(["new-1"])


def test_bad_k_and_dimension(built, data):
    _, _, idx = built
    _, _, queries = data
    with pytest.raises(InputError, match="k must be a positive integer, got 0"):
        idx.search_vectors(queries[:1], 0)
    with pytest.raises(InputError, match=f"k={N + 1} is larger than the number of documents"):
        idx.check_k(N + 1)
    with pytest.raises(InputError, match=f"dimension 63, the index expects {DIM}"):
        idx.search_vectors(queries[:1, :63], 5)
    with pytest.raises(InputError, match="document vectors have dimension 63"):
        idx.add_vectors([Doc("x", "x")], queries[:1, :63])
