"""The CLI over long documents (real processes, real m3e-small): ``index build`` splits by default and
says so in ``index info``; ``search`` shows the passage that scored, ``--unit passages`` the passages;
``--split truncate`` warns with the count of documents cut; Ray refuses passages with a message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import M3E, ROOT
from .test_passages_index import NEEDLE, NEEDLE_QUERY, _long_docs

pytestmark = pytest.mark.slow


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "embedkit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-passages") / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"id": d.id, "text": d.text, "metadata": d.metadata}, ensure_ascii=False)
                              for d in _long_docs(n_docs=6)), encoding="utf-8")
    return path


def test_build_info_search_with_passages(corpus, tmp_path):
    out = tmp_path / "idx"
    r = _cli("index", "build", corpus, "-o", out, "--model", M3E, "--passage-overlap", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["count"] == 6
    info = json.loads(_cli("index", "info", out).stdout)
    p = info["passages"]
    assert p["mode"] == "passages" and p["overlap"] == 8 and p["max_tokens"] == 62
    assert p["library"] == "semantic-text-splitter" and p["split_documents"] == 6 and p["per_document"] > 5
    assert info["count"] == 6 and info["rows"] > 30
    r = _cli("search", out, NEEDLE_QUERY, "-k", "2", "--json")
    hits = json.loads(r.stdout)["hits"]
    assert hits[0]["id"] == "doc-3" and NEEDLE in hits[0]["passage"]["text"] and len(hits) == 2
    table = _cli("search", out, NEEDLE_QUERY, "-k", "1").stdout
    assert "[doc-3]" in table and NEEDLE in table and "chars)" in table and "passage " in table
    r = _cli("search", out, NEEDLE_QUERY, "-k", "3", "--unit", "passages", "--json")
    ph = json.loads(r.stdout)["hits"]
    assert ph[0]["id"] == "doc-3" and all(set(h["passage"]) == {"index", "start", "end", "text"} for h in ph)


def test_truncate_warns_and_ray_refuses_passages(corpus, tmp_path):
    r = _cli("index", "build", corpus, "-o", tmp_path / "t", "--model", M3E, "--split", "truncate")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "6 of 6 documents are longer than the encoder's window (62 tokens) and were cut" in r.stderr
    r = _cli("search", tmp_path / "t", "问题", "--unit", "passages")
    assert r.returncode != 0 and "--split passages" in r.stderr
    r = _cli("index", "build", corpus, "-o", tmp_path / "r", "--engine", "ray", "--split", "passages")
    assert r.returncode != 0 and "--engine ray reads each document whole" in r.stderr
    r = _cli("index", "build", corpus, "-o", tmp_path / "x", "--passage-overlap", "-1")
    assert r.returncode != 0 and "--passage-overlap" in r.stderr
