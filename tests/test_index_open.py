"""Opening an index costs what the command needs: ``index info`` reads the manifest alone (no FAISS
file, document store or model; no torch, faiss or scikit-learn import), and a FAISS base is memory-
mapped read-only instead of copied into RAM, with results, writes and compaction unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex
from embedkit.index.summary import read_info

from .conftest import ROOT, FakeEncoder

LONG = "。".join(f"第{i}句话讲的是一件完全不同的小事情" for i in range(40)) + "。"


def _built(tmp_path, encoder, index="flat"):
    docs = [Doc(f"d{i}", f"文档 {i} 的内容", {"n": i % 3}) for i in range(60)] + [Doc("long", LONG, {"n": 9})]
    idx = EmbedIndex.build(tmp_path / "idx", docs, encoder=encoder, index=index)
    idx.auto_compact = False
    idx.add([Doc("late", "后来加的文档", {"n": 1}), Doc("long2", LONG + "再多一句。", {"n": 2})])
    idx.delete(["d3", "long"])
    return idx


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_info_from_the_manifest_equals_info_of_the_opened_index(tmp_path, tiny_encoder, index):
    idx = _built(tmp_path, tiny_encoder, index)
    opened = EmbedIndex.load(idx.directory, encoder=tiny_encoder).info()
    assert read_info(idx.directory) == opened == EmbedIndex.read_info(idx.directory)
    assert opened["count"] == 60 - 1 + 2 and opened["rows"] > opened["count"]  # long2 is passages
    assert opened["index"]["segments"]  # segments and deletions pending compaction are counted
    idx.compact()
    assert read_info(idx.directory) == EmbedIndex.load(idx.directory, encoder=tiny_encoder).info()


def test_info_opens_no_vectors_documents_or_model(tmp_path, monkeypatch):
    idx = _built(tmp_path, FakeEncoder(dim=16))
    from embedkit.stores import docs_sqlite, faiss_backend

    def refuse(*a, **kw):
        raise AssertionError("index info opened a store file")

    monkeypatch.setattr(faiss_backend.FaissBackend, "load", refuse)
    monkeypatch.setattr(docs_sqlite.DocStore, "__init__", refuse)
    assert read_info(idx.directory)["count"] == 61
    code = ("import sys, io, contextlib, json\n"
            "from embedkit.cli import cli\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    cli.main(['index', 'info', {str(idx.directory)!r}], standalone_mode=False)\n"
            "print(json.dumps({'count': json.loads(out.getvalue())['count'],\n"
            "                  'heavy': sorted(m for m in ('torch', 'faiss', 'sklearn', 'sentence_transformers')\n"
            "                                  if m in sys.modules)}))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"count": 61, "heavy": []}


@pytest.mark.parametrize("index", ["flat", "int8", "hnsw"])
def test_the_faiss_base_is_memory_mapped_and_behaves_the_same(tmp_path, index):
    enc = FakeEncoder(dim=16)
    docs = [Doc(f"d{i}", f"文档 {i}", {"n": i % 3}) for i in range(300)]
    EmbedIndex.build(tmp_path / "idx", docs, encoder=enc, index=index)
    idx = EmbedIndex.load(tmp_path / "idx", encoder=enc)
    base = idx.generation / "index.faiss"
    maps = open("/proc/self/maps").read()
    assert str(base) in maps  # the codes are read through a mapping of the file, not a copy
    queries = [f"文档 {i}" for i in (1, 50, 299)]
    q = enc.encode(queries, normalize=True)
    x = enc.encode([d.text for d in docs], normalize=True)
    got = idx.search(queries, k=5)
    if index == "flat":  # exact: the numpy oracle
        want = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :5]
        assert [[h.id for h in hits] for hits in got] == [[f"d{j}" for j in row] for row in want]
    else:
        assert all(hits[0].id == f"d{i}" for hits, i in zip(got, (1, 50, 299)))
    # writes, deletions and a compaction over the mapped (read-only) base
    idx.add([Doc("new", "新文档", {"n": 5})])
    idx.delete(["d1"])
    idx.compact()
    assert str(idx.generation / "index.faiss") != str(base)
    assert len(idx) == 300 and idx.get("d1") is None and idx.get("new").text == "新文档"
    assert [h.id for h in idx.search(["文档 50"], k=1)[0]] == ["d50"]
    reloaded = EmbedIndex.load(tmp_path / "idx", encoder=enc)
    assert [[h.id for h in hits] for hits in reloaded.search(queries[1:], k=5)] == \
        [[h.id for h in hits] for hits in idx.search(queries[1:], k=5)]
