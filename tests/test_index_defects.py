"""Regression tests for issue 19 (the index under hostile input, damaged files, concurrent processes):
each failed before its fix. Real FAISS and SQLite; a FakeEncoder stands in for the model."""

import logging
import math
import sqlite3

import numpy as np
import pytest

from embedkit.corpus import Doc, iter_corpus
from embedkit.errors import IndexFormatError, InputError
from embedkit.filters import Filter
from embedkit.index import EmbedIndex

from .conftest import FakeEncoder

DIM = 16


def _docs(n, prefix="d", meta=True):
    return [Doc(f"{prefix}{i}", f"文本 {prefix} {i}", {"i": i, "t": "a" if i % 2 else "b"} if meta else None)
            for i in range(n)]


def _build(path, n=40, **kw):
    return EmbedIndex.build(path, _docs(n), encoder=FakeEncoder(DIM), index="flat", **kw)


def _q():
    return FakeEncoder(DIM).encode(["查询"], normalize=True)


@pytest.fixture
def idx(tmp_path):
    return _build(tmp_path / "idx")


# -- defect 2: NaN / inf in metadata -----------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_metadata_is_refused_naming_the_field(idx, value):
    with pytest.raises(InputError, match=r"document 'x'.*metadata field 'score'.*finite"):
        idx.add([Doc("x", "一段文本", {"score": value})])
    with pytest.raises(InputError, match=r"metadata field 'a.b\[1\]'"):
        idx.add([Doc("y", "一段文本", {"a": {"b": [1, value]}})])
    assert len(idx) == 40 and idx.get("x") is None


def test_a_jsonl_corpus_with_nan_metadata_fails_the_build_naming_the_field(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "text": "你好", "x": 1}\n{"id": "2", "text": "再见", "x": NaN}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c.jsonl:2: document '2'.*metadata field 'x'.*nan"):
        EmbedIndex.build(tmp_path / "idx", iter_corpus(corpus), encoder=FakeEncoder(DIM))
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_a_nan_stored_before_validation_breaks_no_filtered_search(tmp_path, monkeypatch):
    """Defence in depth: a row already holding NaN (an index written by an older version) is reported by
    `check` and never makes a filtered search or a get fail."""
    import embedkit.validate as validate

    idx = _build(tmp_path / "idx", 20)
    monkeypatch.setattr(validate, "check_metadata", lambda *a: None)  # what older versions did
    idx.add([Doc("bad", "坏的元数据", {"t": "a", "x": math.nan})])
    monkeypatch.undo()
    assert any("'bad'" in p for p in idx.check())  # still in a segment
    assert idx.compact()  # now in SQLite, as the literal NaN that SQLite's JSON functions refuse
    con = sqlite3.connect(idx.generation / "docs.sqlite")
    assert con.execute("SELECT metadata FROM docs WHERE id = 'bad'").fetchone()[0].find("NaN") > 0
    con.close()
    hits = idx.search_vectors(_q(), 50, filter={"t": "a"})[0]
    assert {h.id for h in hits} == {f"d{i}" for i in range(1, 20, 2)}  # the bad row matches no field
    assert idx.search_vectors(_q(), 50, filter={"x": None})[0]
    assert idx.get("bad").metadata == {"t": "a", "x": None}
    problems = idx.check()
    assert len(problems) == 1 and "'bad'" in problems[0] and "docs.sqlite" in problems[0], problems


# -- defect 5 (library side): filters the store cannot evaluate ---------------------------------------
@pytest.mark.parametrize("value", [2 ** 64, -(2 ** 63) - 1, 10 ** 30])
def test_filter_integers_beyond_64_bits_are_refused(idx, value):
    with pytest.raises(InputError, match=str(value)):
        Filter.parse({"i": value})
    with pytest.raises(InputError, match="64-bit"):
        idx.search_vectors(_q(), 5, filter={"i": value})
    assert idx.search_vectors(_q(), 5, filter={"i": 2 ** 63 - 1})[0] == []


def test_lone_surrogates_are_refused_in_filters_ids_texts_and_metadata(idx):
    with pytest.raises(InputError, match="surrogate"):
        idx.search_vectors(_q(), 5, filter={"t": "\ud800"})
    for doc in (Doc("\ud800", "文本"), Doc("x", "文本\udfff"), Doc("x", "文本", {"k": "\ud800"})):
        with pytest.raises(InputError, match="surrogate"):
            idx.add([doc])
    assert len(idx) == 40


# -- defect 8: a str is one id --------------------------------------------------------------------------
def test_delete_of_a_string_deletes_that_id_not_its_characters(tmp_path):
    idx = EmbedIndex.build(tmp_path / "idx", [Doc(str(i), f"文本 {i}") for i in range(1, 20)],
                           encoder=FakeEncoder(DIM))
    assert idx.delete("12") == 1
    assert idx.get("12") is None and idx.get("1") is not None and idx.get("2") is not None
    with pytest.raises(InputError, match=r"id 3 is a int; ids are strings"):
        idx.delete([3])
    assert idx.get("3") is not None
    with pytest.raises(InputError, match="ids are strings"):
        idx.get(3)


# -- defect 9 -------------------------------------------------------------------------------------------
def test_delete_sees_ids_another_writer_added(idx):
    other = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    other.add([Doc("new", "另一个进程加的")])
    assert idx.delete(["new"]) == 1  # no read in between: delete itself must look at the latest commit
    assert other.get("new") is None


def test_the_snapshot_does_not_share_the_callers_metadata(idx):
    meta = {"t": "mine", "tags": ["x"]}
    idx.add([Doc("m", "我的文本", meta)])
    meta["t"] = "changed"
    meta["tags"].append("y")
    hits = idx.search_vectors(_q(), 50, filter={"t": "mine"})[0]
    assert [h.id for h in hits] == ["m"] and hits[0].metadata == {"t": "mine", "tags": ["x"]}
    hits[0].metadata["t"] = "hit-changed"
    idx.get("m").metadata["t"] = "get-changed"
    assert [h.id for h in idx.search_vectors(_q(), 50, filter={"t": "mine"})[0]] == ["m"]
    assert idx.get("m").metadata == {"t": "mine", "tags": ["x"]}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_add_vectors_refuses_non_finite_vectors_naming_the_row(idx, bad):
    vecs = np.ones((3, DIM), np.float32)
    vecs[1, 4] = bad
    with pytest.raises(InputError, match=r"vector 1 \(document 'v1'\).*finite"):
        idx.add_vectors([Doc(f"v{i}", "向量") for i in range(3)], vecs)
    assert len(idx) == 40


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_add_chunk_size_must_be_a_positive_integer(idx, size):
    with pytest.raises(InputError, match=f"chunk_size must be a positive integer, got {size!r}"):
        idx.add(_docs(3, "c"), chunk_size=size)


@pytest.mark.parametrize("value,type_", [({1, 2}, "set"), (b"x", "bytes"), (object(), "object")])
def test_metadata_that_json_cannot_hold_is_refused_naming_key_and_type(idx, value, type_):
    with pytest.raises(InputError, match=f"metadata field 'k' is a {type_}"):
        idx.add([Doc("s", "文本", {"k": value})])
    with pytest.raises(InputError, match="key 1 must be a string"):
        idx.add([Doc("s", "文本", {1: "x"})])


# -- defect 7: paths that look like URI syntax ------------------------------------------------------------
@pytest.mark.parametrize("name", ["a#b", "a?b=1", "a%20b", "x #?%20 y"])
def test_an_index_path_with_uri_characters_builds_and_opens(tmp_path, name):
    parent = tmp_path / "p"
    parent.mkdir()
    _build(parent / name, 10)
    idx = EmbedIndex.load(parent / name, encoder=FakeEncoder(DIM))
    assert len(idx) == 10 and idx.get("d3").metadata == {"i": 3, "t": "a"}
    assert len(idx.search_vectors(_q(), 3, filter={"t": "a"})[0]) == 3
    idx.add(_docs(5, "n"))
    idx.compact()  # (the add may have compacted already)
    assert not idx.store.segments and idx.check() == []
    assert sorted(p.name for p in parent.iterdir()) == [name]  # no stray files beside the index
    assert not list(tmp_path.glob("*.sqlite*")) and sorted(p.name for p in tmp_path.iterdir()) == ["p"]


# -- defect 4: damaged files name the file ---------------------------------------------------------------
def _truncate(path, keep=None, cut=None):
    data = path.read_bytes()
    path.unlink()  # never write through the hard links other generations share
    path.write_bytes(data[:keep] if keep is not None else data[:-cut])


def _expect_damage(directory, name):
    with pytest.raises(IndexFormatError, match=name.replace(".", r"\.")):
        EmbedIndex.load(directory, encoder=FakeEncoder(DIM))


def test_a_truncated_segment_names_the_file(idx):
    idx.add(_docs(2, "s"))
    seg = next(idx.generation.glob("seg-*.npz"))
    _truncate(seg, keep=60)
    _expect_damage(idx.directory, seg.name)


def test_truncated_lexical_tokens_name_the_file(tmp_path):
    idx = _build(tmp_path / "idx", 20, lexical=True)
    tokens = next(idx.generation.rglob("tokens.npz"))
    _truncate(tokens, keep=100)
    _expect_damage(idx.directory, "tokens.npz")


def test_truncated_binarize_names_the_file(tmp_path):
    idx = EmbedIndex.build(tmp_path / "idx", _docs(40), encoder=FakeEncoder(DIM), index="binary")
    f = next(idx.generation.rglob("binarize.npz"))
    _truncate(f, keep=100)
    _expect_damage(idx.directory, "binarize.npz")


def test_truncated_tombstones_name_the_file(tmp_path):
    idx = EmbedIndex.build(tmp_path / "idx", _docs(60), encoder=FakeEncoder(DIM), index="hnsw")
    idx.delete(["d1", "d2"])
    idx.compact()
    tomb = idx.generation / "tombstones.npy"
    assert tomb.is_file()
    _truncate(tomb, cut=8)
    _expect_damage(idx.directory, "tombstones.npy")


def test_a_docs_sqlite_missing_its_tail_names_the_file(tmp_path):
    idx = _build(tmp_path / "idx", 300)
    _truncate(idx.generation / "docs.sqlite", cut=100)
    _expect_damage(idx.directory, "docs.sqlite")


def test_check_names_a_damaged_docs_sqlite_instead_of_raising(idx):
    path = idx.generation / "docs.sqlite"
    data = bytearray(path.read_bytes())
    data[-600:-100] = b"\xff" * 500  # damage the content, keep the length (opens, then fails when read)
    path.unlink()
    path.write_bytes(bytes(data))
    try:
        fresh = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    except IndexFormatError as e:
        assert "docs.sqlite" in str(e)
        return
    problems = fresh.check()
    assert problems and all("docs.sqlite" in p for p in problems), problems


# -- defect 3: a committed write whose automatic compaction fails is not reported as failed -------------------
def test_a_failed_auto_compaction_does_not_fail_the_committed_add(idx, monkeypatch, caplog):
    from embedkit.stores.faiss_store import FaissStore

    def disk_full(self, commit):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FaissStore, "compact", disk_full)
    with caplog.at_level(logging.WARNING, logger="embedkit.index.core"):
        assert idx.add(_docs(10, "n")) == 10  # > 10% of the base: compaction is due, and fails
        assert idx.delete(["n0"]) == 1        # the delete shares the path
    assert "No space left on device" in caplog.text and "committed" in caplog.text
    fresh = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    assert len(fresh) == 49 and fresh.get("n1") is not None and fresh.get("n0") is None
    monkeypatch.undo()
    idx.add(_docs(1, "z"))  # the next write retries the compaction
    assert not idx.store.segments and len(idx) == 50 and idx.check() == []



# -- defect 1: a lexical part or a calibration committed by another writer reaches a loaded index ------------
def test_a_lexical_part_added_by_another_writer_is_picked_up(idx):
    assert idx.store.lexical is None
    other = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    other.add_lexical()
    hits = idx.search(["文本 d 7"], 5, mode="lexical")[0]  # no error "this index has no lexical part"
    assert hits and hits[0].id == "d7"
    assert idx.search(["文本 d 7"], 5, mode="hybrid")[0]
    idx.add(_docs(10, "n"))  # auto-compacts (> 10 % of the base): the lexical part must survive it
    fresh = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    assert "lexical" in fresh.manifest["index"] and fresh.store.lexical is not None
    assert fresh.search(["文本 n 3"], 3, mode="lexical")[0][0].id == "n3"
    assert fresh.check() == []


def test_a_calibration_committed_by_another_writer_is_picked_up(idx, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"问题 {i}\t问题 {i if i % 2 else i + 100}\t{i % 2}\n" for i in range(40)),
                     encoding="utf-8")
    assert idx.search_vectors(_q(), 3)[0][0].probability is None
    other = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    other.calibrate(pairs)
    hits = idx.search_vectors(_q(), 3)[0]
    assert all(h.probability is not None and isinstance(h.match, bool) for h in hits)
    assert idx.query_path.calibration.threshold_ == other.query_path.calibration.threshold_


# -- defect 6: a read never waits for a writer's lock -------------------------------------------------------
def test_a_search_does_not_wait_for_this_objects_queued_writer(idx):
    """Another writer commits and keeps the directory lock (e.g. a long compaction); this object's own
    writer is queued on that lock. A search must switch to the new commit at once, not wait for both."""
    import threading
    import time

    import embedkit.index.directory as dirs

    other = EmbedIndex.load(idx.directory, encoder=FakeEncoder(DIM))
    holding, release = threading.Event(), threading.Event()

    def other_writer():  # what another process does: commit, then take the lock again for a while
        other.add([Doc("o1", "另一个写者")])
        with dirs.writer_lock(idx.directory):
            holding.set()
            release.wait(20)

    t_other = threading.Thread(target=other_writer, daemon=True)
    t_other.start()
    assert holding.wait(20)
    t_mine = threading.Thread(target=lambda: idx.add([Doc("m1", "排队的写者")]), daemon=True)
    t_mine.start()
    time.sleep(0.5)  # this object's writer now holds its object lock, queued on the directory lock
    try:
        t0 = time.perf_counter()
        assert idx.get("o1") is not None  # the other writer's commit, read without waiting
        hits = idx.search_vectors(_q(), 5)[0]
        took = time.perf_counter() - t0
    finally:
        release.set()
        t_other.join(20)
        t_mine.join(20)
    assert took < 1.0 and len(hits) == 5, took
    assert idx.get("m1") is not None and len(idx) == 42
