"""Compressed index types beyond the shared contract (tests/test_index_contract.py runs them too):
binary vectors memory-mapped from disk, bytes per vector against closed forms, exact rescored
scores, reducers, linked files never written through, the SQ8 quantizer kept across rebuilds, and
bad files."""

import hashlib
import shutil

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.errors import IndexFormatError, InputError
from embedkit.index import EmbedIndex
from embedkit.stores.binary_backend import BinaryBackend

from .conftest import FakeEncoder, clustered_vectors

N, DIM, K = 2000, 64, 10


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    x = clustered_vectors(N + 50, DIM, seed=3)
    docs = [Doc(f"d{i}", f"t{i}", {"g": i % 2}) for i in range(N)]
    return docs, {d.text: x[i] for i, d in enumerate(docs)}, x[N:]


def _build(path, data, index, **kw):
    docs, table, _ = data
    return EmbedIndex.build(path, iter(docs), encoder=FakeEncoder(DIM, dict(table)), index=index, **kw)


def _in_ram_float_bytes(be) -> int:
    """Bytes of float arrays the backend holds in RAM (memory-mapped arrays excluded)."""
    arrays = [a for v in vars(be).values() for a in (v if isinstance(v, tuple) else (v,))]
    return sum(a.nbytes for a in arrays
               if isinstance(a, np.ndarray) and not isinstance(a, np.memmap) and a.dtype.kind == "f")


FIXED = 4 * (DIM * DIM + DIM)  # the rotation and the thresholds, whatever the vector count


def test_binary_full_vectors_are_memory_mapped_not_in_ram(tmp_path, data):
    idx = _build(tmp_path / "b", data, "binary")
    for opened in (idx, EmbedIndex.load(tmp_path / "b", encoder=FakeEncoder(DIM, data[1]))):
        be = opened.store.be
        assert isinstance(be, BinaryBackend)
        assert isinstance(be.vectors, np.memmap) and be.vectors.mode == "r"
        assert be.vectors.shape == (N, DIM) and be.vectors.dtype == np.float32
        assert be.vectors.filename == (opened.generation / "vectors.npy").resolve()
        assert _in_ram_float_bytes(be) == FIXED  # rotation and thresholds, never the N x DIM vectors
    # after adds, deletes and a compaction: a new file in the new generation, mapped again
    idx.add_vectors([Doc("x1", "x1")], _normalize(data[2][:1]))
    idx.delete(["d0", "d1"])
    assert idx.compact()
    be = idx.store.be
    assert isinstance(be.vectors, np.memmap) and be.vectors.shape == (N - 1, DIM)
    st = (idx.generation / "vectors.npy").stat()  # the file was written in the commit directory, since renamed
    assert be.ident == (st.st_dev, st.st_ino)
    assert _in_ram_float_bytes(be) == FIXED


# kind -> (code bytes, bytes in RAM, bytes on disk) per vector, closed forms for dimension d
CLOSED = {
    "flat": lambda d: (4 * d, 4 * d + 8, 4 * d + 8),            # IDMap2: float32 + int64 id
    "int8": lambda d: (d, d + 8, d + 8),                        # IDMap,SQ8: one byte per dimension + id
    "binary": lambda d: (-(-d // 8), -(-d // 8) + 8,             # codes + row -> id array in RAM
                         -(-d // 8) + 8 + 4 * d),               # + float32 vectors on disk
}


@pytest.mark.parametrize("kind", sorted(CLOSED))
@pytest.mark.parametrize("dim", [DIM, 20])
def test_bytes_per_vector_closed_forms(tmp_path, kind, dim):
    x = clustered_vectors(N, dim, seed=1)
    docs = [Doc(f"d{i}", f"t{i}") for i in range(N)]
    idx = EmbedIndex.build(tmp_path / "i", iter(docs), encoder=FakeEncoder(dim, {d.text: v for d, v in zip(docs, x)}),
                           index=kind)
    bpv = idx.info()["index"]["bytes_per_vector"]
    code, ram, disk = CLOSED[kind](dim)
    assert bpv["code"] == code
    # the rest is file headers: under 1 KiB in all
    assert 0 <= bpv["ram"] - ram < 1024 / N and 0 <= bpv["disk"] - disk < 1024 / N, bpv
    assert idx.info()["index"]["type"] == kind


def test_bytes_per_vector_hnsw_int8_counts_graph_links(tmp_path, data):
    bpv = _build(tmp_path / "h", data, "hnsw-int8").info()["index"]["bytes_per_vector"]
    links0 = 2 * 32 * 4  # M=32: 2M int32 neighbours on level 0 for every vector
    assert bpv["code"] == DIM
    assert DIM + 8 + links0 <= bpv["ram"] <= DIM + 8 + links0 + 64 and bpv["disk"] == bpv["ram"], bpv


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_binary_scores_are_exact_rescored_scores(tmp_path, data, metric):
    docs, table, queries = data
    idx = _build(tmp_path / "b", data, "binary-hnsw", metric=metric)
    x = np.stack([table[d.text] for d in docs])
    if metric == "cosine":
        x, q = _normalize(x), _normalize(queries)
        exact = q @ x.T
    else:
        q = queries
        exact = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    rows = idx.search_vectors(q, K)
    for qi, row in enumerate(rows):
        got = np.array([h.score for h in row])
        want = exact[qi, [int(h.id[1:]) for h in row]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    truth = np.argsort(-exact, axis=1)[:, :K]
    recall = np.mean([len({f"d{j}" for j in t} & {h.id for h in r}) / K for t, r in zip(truth, rows)])
    assert recall >= 0.85, recall
    # k above the count: every document, exactly ranked
    for qi, row in enumerate(idx.search_vectors(q[:2], N + 1)):
        assert sorted(h.id for h in row) == sorted(d.id for d in docs)
        np.testing.assert_allclose([h.score for h in row], np.sort(exact[qi])[::-1], rtol=1e-4, atol=1e-4)


def test_binary_with_a_reducer_and_exact_vectors_back(tmp_path, data):
    docs, table, queries = data
    idx = _build(tmp_path / "p", data, "binary", reduce="pca:32")
    assert idx.dim == 32 and idx.info()["index"]["bytes_per_vector"]["code"] == 4
    enc = FakeEncoder(DIM, table)
    proj = idx.query_path.project(np.stack([table[d.text] for d in docs]))
    q = idx.query_path.project(queries)
    truth = np.argsort(-(q @ proj.T), axis=1)[:, :K]
    rows = idx.search_vectors(q, K)
    recall = np.mean([len({f"d{j}" for j in t} & {h.id for h in r}) / K for t, r in zip(truth, rows)])
    assert recall >= 0.85, recall
    # the full vectors come back exactly (they are kept, not only the codes)
    back = {r[1]: r[4] for batch in idx.store.iterate(with_vectors=True) for r in batch}
    np.testing.assert_array_equal(np.stack([back[d.id] for d in docs]), proj.astype(np.float32))
    # search by text goes through the same query path
    assert EmbedIndex.load(tmp_path / "p", encoder=enc).search(["t5"], 1)[0][0].id == "d5"


@pytest.mark.parametrize("kind", ["binary", "int8"])
def test_compaction_never_writes_through_linked_files(tmp_path, data, kind):
    idx = _build(tmp_path / "c", data, kind)
    gen = idx.generation
    keep = tmp_path / "old-inodes"  # extra links keep the old base's inodes alive after garbage collection
    keep.mkdir()
    files = {}
    for p in gen.iterdir():
        (keep / p.name).hardlink_to(p)
        files[p.name] = (p.stat().st_ino, hashlib.sha256(p.read_bytes()).hexdigest())
    old_store = idx.store
    before = [[h.id for h in r] for r in idx.search_vectors(_normalize(data[2][:5]), K)]
    idx.add_vectors([Doc("x1", "x1")], _normalize(data[2][:1]))
    idx.delete(["d3"])
    linked = {p.name: p.stat().st_ino for p in idx.generation.iterdir()}
    assert all(linked[n] == files[n][0] for n in files if n != "manifest.json")  # the base is linked, not copied
    assert idx.compact()
    for name, (ino, digest) in files.items():  # the old base's inodes still hold exactly the old base
        assert hashlib.sha256((keep / name).read_bytes()).hexdigest() == digest, name
        new = idx.generation / name
        if name not in ("reducer.json", "reducer.npz"):
            assert new.stat().st_ino != ino, f"{name} was not rewritten by the compaction"
    # a reader holding the old snapshot still searches the old base, unchanged
    assert [[h[1] for h in r] for r in old_store.search(_normalize(data[2][:5]), K, None)] == before
    if kind == "binary":
        assert old_store.be.vectors.shape == (N, DIM)


def test_hnsw_int8_rebuild_after_many_deletions_keeps_the_quantizer(tmp_path, data):
    docs, table, queries = data
    idx = _build(tmp_path / "h", data, "hnsw-int8")
    idx.auto_compact = False
    gone = [d.id for d in docs[: N // 2]]
    idx.delete(gone)
    assert idx.compact()  # removes half the base: HNSW tombstones pass 25% and the graph is rebuilt
    assert idx.store.be.tombstones == set() and len(idx) == N - len(gone)
    x = _normalize(np.stack([table[d.text] for d in docs[N // 2:]]))
    q = _normalize(queries)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :K] + N // 2
    rows = idx.search_vectors(q, K)
    assert not {h.id for r in rows for h in r} & set(gone)
    recall = np.mean([len({f"d{j}" for j in t} & {h.id for h in r}) / K for t, r in zip(truth, rows)])
    assert recall >= 0.9, recall


def test_binary_bad_files_and_parameters(tmp_path, data):
    with pytest.raises(InputError, match="rescore must be a number >= 1.*got 0"):
        _build(tmp_path / "r", data, "binary", index_params={"rescore": 0})
    d = tmp_path / "b"
    idx = _build(d, data, "binary", index_params={"rescore": 2})
    assert idx.manifest["index"]["params"]["rescore"] == 2
    enc = FakeEncoder(DIM, data[1])
    gen = idx.generation
    saved = {n: (gen / n).read_bytes() for n in ("rows.npy", "vectors.npy")}
    (gen / "rows.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"rows\.npy is missing"):
        EmbedIndex.load(d, encoder=enc)
    np.save(gen / "rows.npy", np.arange(5, dtype=np.int64))
    with pytest.raises(IndexFormatError, match="inconsistent: 2000 codes.*5 row ids"):
        EmbedIndex.load(d, encoder=enc)
    (gen / "rows.npy").write_bytes(saved["rows.npy"])
    (gen / "vectors.npy").write_bytes(saved["vectors.npy"][:1000])
    with pytest.raises(IndexFormatError, match=r"vectors\.npy is corrupt"):
        EmbedIndex.load(d, encoder=enc)
    (gen / "vectors.npy").write_bytes(saved["vectors.npy"])
    shutil.copy(gen / "binary.faissb", tmp_path / "keep")
    (gen / "binary.faissb").write_bytes(b"not a faiss file")
    with pytest.raises(IndexFormatError, match=r"binary\.faissb is corrupt or unreadable"):
        EmbedIndex.load(d, encoder=enc)
    shutil.copy(tmp_path / "keep", gen / "binary.faissb")
    assert len(EmbedIndex.load(d, encoder=enc)) == N


def test_retrieval_eval_builds_the_compressed_types():
    """``embedkit eval --retrieval --index int8,binary,...`` builds them as the index store does."""
    from embedkit.evaluation.retrieval import build_faiss, exact_search, index_bytes_per_vector, index_code_bytes

    x = _normalize(clustered_vectors(N + 50, DIM, seed=7))
    docs, qs = x[:N], x[N:]
    _, truth = exact_search(docs, qs, K)
    for kind, factory, code in [("int8", "SQ8", DIM), ("hnsw-int8", "HNSW32_SQ8", DIM), ("binary", "binary", DIM // 8),
                                ("binary-hnsw", "binary-hnsw", DIM // 8)]:
        index, f = build_faiss(kind, docs)
        assert f == factory and index.ntotal == N and index_code_bytes(index) == code
        assert code < index_bytes_per_vector(index) < code + 8 + 2 * 32 * 4 + 64
        D, I = index.search(qs, K)
        assert D.shape == I.shape == (len(qs), K) and (I >= 0).all()
        assert np.all(np.diff(D, axis=1) <= 1e-6)
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, I)])
        assert recall >= (0.9 if "int8" in kind else 0.85), (kind, recall)
        if kind.startswith("binary"):  # rescored: the scores are the exact inner products
            np.testing.assert_allclose(D, np.take_along_axis(qs @ docs.T, I, axis=1), rtol=1e-5, atol=1e-6)
