"""Long documents through a real ``embedkit serve`` on 127.0.0.1 (real m3e-small, real FAISS): search
returns each document once with the passage that scored, ``unit=passages`` the passages, POST
/documents splits a long document, GET returns it whole, DELETE removes every passage; the search page
marks the passage, takes its search from the URL and renders Chinese glyphs (headless Chromium)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from urllib.parse import urlencode

import httpx
import pytest

from ._api_util import assert_error, serving
from .conftest import ROOT
from .test_passages_index import NEEDLE, NEEDLE_QUERY, _long_docs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_index(tmp_path_factory):
    """Built by the CLI (default split: passages) from a JSON-lines corpus of long documents."""
    import json

    d = tmp_path_factory.mktemp("api-passages")
    corpus = d / "docs.jsonl"
    docs = _long_docs(n_docs=8)
    corpus.write_text("\n".join(json.dumps({"id": x.id, "text": x.text, "metadata": x.metadata}, ensure_ascii=False)
                                for x in docs[:-1]), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "embedkit.cli", "index", "build", str(corpus), "-o", str(d / "idx"),
                        "--model", str(ROOT.parent / "shared" / "models" / "m3e-small")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "idx", docs


@pytest.fixture(scope="module")
def server(long_index, tmp_path_factory):
    with serving(long_index[0], tmp_path_factory.mktemp("api-passages-log") / "server.log", "--backend", "torch") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_search_returns_documents_with_their_best_passage(client, long_index):
    docs = long_index[1]
    body = client.post("/search", json={"query": NEEDLE_QUERY, "top_k": 5}).json()
    hits = body["results"][0]["hits"]
    assert body["count"] == 7 and len({h["id"] for h in hits}) == len(hits) == 5
    top = hits[0]
    assert top["id"] == "doc-3" and top["text"] == docs[3].text
    p = top["passage"]
    assert NEEDLE in p["text"] and top["text"][p["start"]:p["end"]] == p["text"] and p["index"] > 0
    passages = client.post("/search", json={"query": NEEDLE_QUERY, "top_k": 5, "unit": "passages"}).json()
    ph = passages["results"][0]["hits"]
    assert ph[0]["id"] == "doc-3" and ph[0]["text"] == p["text"] and ph[0]["passage"] == p
    assert_error(client.post("/search", json={"query": "x", "unit": "pages"}), 422)
    assert_error(client.post("/search", json={"query": "x", "unit": "passages", "mode": "lexical"}), 422, None,
                 "unit 'passages' needs mode 'dense'")


def test_add_get_delete_a_long_document(client, long_index):
    doc = long_index[1][-1]  # doc-7: not in the index yet
    assert client.get("/info").json()["count"] == 7
    r = client.post("/documents", json={"documents": [{"id": doc.id, "text": doc.text, "metadata": doc.metadata}]})
    assert r.status_code == 201 and r.json()["added"] == 1 and r.json()["count"] == 8
    got = client.get(f"/documents/{doc.id}").json()
    assert got == {"id": doc.id, "text": doc.text, "metadata": doc.metadata}
    tail = doc.text[-40:]
    hits = client.post("/search", json={"query": tail, "top_k": 3}).json()["results"][0]["hits"]
    assert hits[0]["id"] == doc.id and hits[0]["passage"]["end"] == len(doc.text)  # its last passage was indexed
    assert client.delete(f"/documents/{doc.id}").json() == {"deleted": 1, "id": doc.id, "count": 7}
    assert_error(client.get(f"/documents/{doc.id}"), 404)
    big = "".join(x.text for x in long_index[1])[:6000]  # past --max-chars (4096), within --max-document-chars
    r = client.post("/documents", json={"documents": [{"id": "big", "text": big}]})
    assert r.status_code == 201 and client.get("/documents/big").json()["text"] == big
    assert client.delete("/documents/big").status_code == 200
    assert_error(client.post("/search", json={"query": big}), 422, None, "at most 4096 characters")
    ids = {h["id"] for h in client.post("/search", json={"query": tail, "top_k": 7, "unit": "passages"}).json()[
        "results"][0]["hits"]}
    assert doc.id not in ids  # none of its passages is left


def test_search_page_marks_the_passage_and_reads_the_url(server, tmp_path):
    from ._browser import Chromium

    url = server.url + "/?" + urlencode({"q": NEEDLE_QUERY, "k": "5", "mode": "dense"})
    with Chromium(tmp_path) as browser:
        page = asyncio.run(browser.linked_search(url, screenshot=tmp_path / "page.png"))
    assert page["state"] == {"q": NEEDLE_QUERY, "k": "5", "mode": "dense"}
    top = page["rows"][0]
    assert top["id"] == "doc-3" and NEEDLE in top["mark"] and NEEDLE in top["text"]
    assert top["where"].startswith("passage ")
    assert page["cjk_glyphs"], "Chinese characters render as boxes: install Debian's fonts-noto-cjk"
    assert (tmp_path / "page.png").stat().st_size > 10_000
