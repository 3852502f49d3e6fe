"""Bad index directories, and interrupted writes that must leave the previous index intact."""

import json
import shutil

import numpy as np
import pytest

import embedkit.index.directory as index_mod
from embedkit.corpus import Doc
from embedkit.errors import IndexFormatError, InputError
from embedkit.index import EmbedIndex

from .conftest import FakeEncoder

DIM = 16


def _docs(n, prefix="d"):
    return [Doc(f"{prefix}{i}", f"文本 {prefix} {i}", {"i": i}) for i in range(n)]


@pytest.fixture
def idx_dir(tmp_path):
    d = tmp_path / "idx"
    EmbedIndex.build(d, _docs(50), encoder=FakeEncoder(DIM), index="flat")
    return d


def _state(d):
    idx = EmbedIndex.load(d, encoder=FakeEncoder(DIM))
    q = FakeEncoder(DIM).encode(["查询"], normalize=True)
    return len(idx), [h.id for h in idx.search_vectors(q, 10)[0]], (d / "CURRENT").read_text()


def _failing(docs, after):
    for i, d in enumerate(docs):
        if i == after:
            raise RuntimeError("simulated crash while reading the corpus")
        yield d


def test_interrupted_rebuild_keeps_previous_index(idx_dir):
    before = _state(idx_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        EmbedIndex.build(idx_dir, _failing(_docs(100, "n"), 70), encoder=FakeEncoder(DIM), overwrite=True,
                         chunk_size=16, fit_sample=16)
    assert _state(idx_dir) == before
    assert not list(idx_dir.glob(".tmp-gen-*"))


def test_interrupted_add_keeps_previous_index(idx_dir):
    before = _state(idx_dir)
    idx = EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))
    with pytest.raises(RuntimeError, match="simulated crash"):
        idx.add(_failing(_docs(40, "n"), 30), chunk_size=8)
    assert len(idx) == 50 and idx.get("n0") is None  # in-memory state untouched too
    assert _state(idx_dir) == before


def test_crash_before_current_switch_keeps_previous_index(idx_dir, monkeypatch):
    before = _state(idx_dir)
    idx = EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))

    def boom(path, data):
        raise OSError("disk full while switching CURRENT")

    monkeypatch.setattr(index_mod, "atomic_write_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        idx.add(_docs(5, "n"))
    monkeypatch.undo()
    assert _state(idx_dir) == before
    # the next successful write cleans up the orphaned generation
    idx.add(_docs(5, "m"))
    assert len(list(idx_dir.glob("gen-*"))) == 1 and len(idx) == 55


def test_duplicate_ids_add_nothing(idx_dir):
    idx = EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))
    with pytest.raises(InputError, match="id 'd3' is already in the index"):
        idx.add([Doc("new", "新"), Doc("d3", "重复")])
    with pytest.raises(InputError, match="duplicate id 'x'"):
        idx.add([Doc("x", "一"), Doc("x", "二")])
    assert len(EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))) == 50


def test_missing_and_non_index_directories(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        EmbedIndex.load(tmp_path / "nope", encoder=FakeEncoder(DIM))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="not a complete embedkit index"):
        EmbedIndex.load(tmp_path / "empty", encoder=FakeEncoder(DIM))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty and is not an embedkit index"):
        EmbedIndex.build(tmp_path / "other", _docs(5), encoder=FakeEncoder(DIM))


def test_existing_index_needs_overwrite(idx_dir):
    with pytest.raises(InputError, match="already holds an index; use --overwrite"):
        EmbedIndex.build(idx_dir, _docs(5), encoder=FakeEncoder(DIM))


@pytest.mark.parametrize("damage,msg", [
    (lambda g: (g / "manifest.json").write_text("{oops"), "manifest .* is corrupt"),
    (lambda g: (g / "manifest.json").unlink(), "manifest .* is missing"),
    (lambda g: (g / "index.faiss").write_bytes(b"\0" * 10), "FAISS file .* corrupt"),
    (lambda g: (g / "index.faiss").unlink(), "FAISS file .* is missing"),
    (lambda g: (g / "docs.sqlite").unlink(), "document store .* is missing"),
    (lambda g: (g / "docs.sqlite").write_bytes(b"garbage" * 100), "document store .* is corrupt"),
    (lambda g: (g / "reducer.npz").unlink(), "reducer file .* is missing"),
])
def test_damaged_files_give_clear_errors(idx_dir, damage, msg):
    gen = idx_dir / (idx_dir / "CURRENT").read_text().strip()
    damage(gen)
    with pytest.raises(IndexFormatError, match=msg):
        EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))


def test_incompatible_version_and_inconsistent_counts(idx_dir):
    gen = idx_dir / (idx_dir / "CURRENT").read_text().strip()
    m = json.loads((gen / "manifest.json").read_text())
    (gen / "manifest.json").write_text(json.dumps(dict(m, count=49)))
    with pytest.raises(IndexFormatError, match="inconsistent: manifest count 49, FAISS holds 50"):
        EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))
    (gen / "manifest.json").write_text(json.dumps(dict(m, format_version=99)))
    with pytest.raises(IndexFormatError, match="format_version 99; .* reads version 1"):
        EmbedIndex.load(idx_dir, encoder=FakeEncoder(DIM))


def test_encoder_mismatch_rejected(idx_dir):
    with pytest.raises(IndexFormatError, match="dim is 8 but the index was built with 16"):
        EmbedIndex.load(idx_dir, encoder=FakeEncoder(8))


def test_reducer_larger_than_vectors_or_samples(tmp_path):
    with pytest.raises(InputError, match=r"whitening:32 asks for more components .* \(16\)"):
        EmbedIndex.build(tmp_path / "a", _docs(50), encoder=FakeEncoder(DIM), reduce="whitening:32")
    with pytest.raises(InputError, match="rank at most 9"):
        EmbedIndex.build(tmp_path / "b", _docs(10), encoder=FakeEncoder(DIM), reduce="whitening:12")
    assert not (tmp_path / "b" / "CURRENT").exists()


def test_whitened_index_round_trip(tmp_path):
    d = tmp_path / "w"
    idx = EmbedIndex.build(d, _docs(200), encoder=FakeEncoder(DIM), reduce="whitening:8", index="hnsw")
    q = FakeEncoder(DIM).encode(["查询", "另一个"])
    a = idx.search_vectors(idx.reducer.transform(q) / 1.0, 5)
    again = EmbedIndex.load(d, encoder=FakeEncoder(DIM))
    np.testing.assert_array_equal(idx.embed(["查询"]), again.embed(["查询"]))
    assert [h.id for h in a[0]] == [h.id for h in again.search_vectors(again.reducer.transform(q), 5)[0]]
    assert idx.dim == 8 and np.allclose(np.linalg.norm(idx.embed(["x", "y"]), axis=1), 1)


def test_ivf_needs_enough_training_vectors(tmp_path):
    with pytest.raises(InputError, match="needs at least 300 training vectors"):
        EmbedIndex.build(tmp_path / "i", _docs(50), encoder=FakeEncoder(DIM), index="IVF300,Flat")
    shutil.rmtree(tmp_path / "i", ignore_errors=True)
