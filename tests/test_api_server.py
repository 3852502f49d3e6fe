"""The REST service, end to end: the real ``embedkit serve`` (m3e-small, a small flat index) over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from ._api_util import Server, assert_error, demo_docs, serving
from .conftest import M3E

pytestmark = pytest.mark.slow

MAX_TEXTS, MAX_CHARS, MAX_BODY, MAX_TOP_K = 32, 512, 64 * 1024, 50
BANK_QUERY = "信用卡额度太低能调高吗"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, m3e_encoder):
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("api") / "idx"
    EmbedIndex.build(d, demo_docs(every=6), encoder=m3e_encoder, index="flat")
    return d


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    # --backend torch: these tests pin the server's vectors to the library's fp32 torch vectors (1e-4);
    # the default ("auto") is tested against the same oracle in test_serve_default_runtime.
    with serving(index_dir, tmp_path_factory.mktemp("api-log") / "server.log", "--backend", "torch",
                 "--max-texts", str(MAX_TEXTS), "--max-chars", str(MAX_CHARS), "--max-body-bytes", str(MAX_BODY),
                 "--max-top-k", str(MAX_TOP_K)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def local_index(index_dir, m3e_encoder, server):
    """The same index opened in the test process (read-only), to compare vectors with the library's."""
    from embedkit.index import EmbedIndex

    return EmbedIndex.load(index_dir, encoder=m3e_encoder)


def count(client) -> int:
    return client.get("/info").json()["count"]


# ------------------------------------------------------------------------------------------------
# the endpoints
# ------------------------------------------------------------------------------------------------
def test_health_info_and_page(client, index_dir):
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["dim"] == 512 and info["encoder_dim"] == 512 and info["metric"] == "cosine"
    assert info["served_model_name"] == "m3e-small" and info["pooling"] == "model" and info["reducer"] == "none"
    assert info["index_type"] and info["count"] == h.json()["count"] == len(demo_docs(every=6))
    assert info["settings"]["max_texts"] == MAX_TEXTS and info["settings"]["auth"] is False
    assert info["backend"] == info["settings"]["backend"] == "torch"
    assert "api_key" not in info["settings"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/search", "/encode", "/v1/embeddings", "/documents", "/documents/{doc_id}", "/health",
                 "/info", "/metrics"):
        assert path in spec["paths"], path
    # the limits in force are part of the published schema
    assert f'"maxItems": {MAX_TEXTS}' in json.dumps(spec)


def test_serve_default_runtime(index_dir, m3e_encoder, tmp_path):
    """With no --backend the server runs "auto": the fastest runtime within 0.5 Spearman points of fp32,
    measured on this machine (or read from the cache). /info names it and shows the table; its vectors
    are the library's vectors for that runtime, and close to fp32."""
    from embedkit.encoder import Encoder
    from embedkit.runtimes.measure import Measurement

    texts = ["花呗怎么还款", "信用卡额度太低能调高吗", "今天天气很好", "我想查一下我的借款记录"]
    srv = Server(index_dir, tmp_path / "server.log").wait_ready()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            info = c.get("/info").json()
            got = np.array([d["embedding"] for d in c.post("/v1/embeddings", json={"input": texts}).json()["data"]])
    finally:
        srv.stop()
    auto = info["auto"]
    assert info["backend"] == auto["choice"] and auto["bound"] == 0.5
    rows = {m["name"]: m for m in auto["measurements"]}
    chosen = Measurement(**{**rows[auto["choice"]], "spearman": None, "seconds": 0.0})
    assert chosen.qualifies(0.5)
    assert all(m["sentences_per_s"] <= chosen.sentences_per_s for m in rows.values()
               if Measurement(**{**m, "spearman": None, "seconds": 0.0}).qualifies(0.5))
    same = Encoder(str(M3E), backend=auto["choice"]).encode(texts)
    assert (got * same).sum(1).min() > 0.999  # the served vectors are that runtime's vectors
    cos = (got * m3e_encoder.encode(texts)).sum(1)
    assert cos.min() > 0.99, cos


def test_search_single_query(client):
    r = client.post("/search", json={"query": BANK_QUERY, "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == count(client) and body["took_ms"] >= 0
    [res] = body["results"]
    assert res["query"] == BANK_QUERY
    hits = res["hits"]
    assert len(hits) == 5
    assert set(hits[0]) == {"id", "text", "score", "metadata"}
    assert hits[0]["metadata"]["topic"] == "银行卡与信用卡"
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)


def test_search_batch_filter_min_score_and_large_k(client):
    qs = [BANK_QUERY, "我的包裹到哪里了"]
    r = client.post("/search", json={"queries": qs, "top_k": 3})
    assert [x["query"] for x in r.json()["results"]] == qs
    assert r.json()["results"][1]["hits"][0]["metadata"]["topic"] == "快递物流"
    r = client.post("/search", json={"query": BANK_QUERY, "top_k": 10, "filter": {"topic": "快递物流"}})
    hits = r.json()["results"][0]["hits"]
    assert hits and all(h["metadata"]["topic"] == "快递物流" for h in hits)
    r = client.post("/search", json={"query": BANK_QUERY, "top_k": 10, "min_score": 0.8})
    assert all(h["score"] >= 0.8 for h in r.json()["results"][0]["hits"])
    r = client.post("/search", json={"query": BANK_QUERY, "filter": {"topic": "没有这个主题"}})
    assert r.status_code == 200 and r.json()["results"][0]["hits"] == []
    # top_k above the number of documents returns them all (the index may shrink under a client)
    n = count(client)
    r = client.post("/search", json={"query": BANK_QUERY, "top_k": MAX_TOP_K})
    assert len(r.json()["results"][0]["hits"]) == min(n, MAX_TOP_K)


def test_encode_matches_the_library(client, local_index, m3e_encoder):
    texts = ["今天天气不错", "银行卡换了手机号怎么修改预留号码"]
    r = client.post("/encode", json={"texts": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dim"] == 512 and body["reduced"] is True and body["normalized"] is True
    got = np.array(body["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(got, local_index.embed(texts), atol=1e-4)
    raw = client.post("/encode", json={"texts": texts[0], "reduce": False, "normalize": False}).json()
    np.testing.assert_allclose(np.array(raw["embeddings"][0]), m3e_encoder.encode(texts[0], normalize=False),
                               atol=1e-3, rtol=1e-4)


def test_openai_embeddings_shape_float_and_base64(client, local_index):
    texts = ["你好", "怎么开通信用卡"]
    f = client.post("/v1/embeddings", json={"input": texts, "model": "m3e-small"})
    assert f.status_code == 200, f.text
    body = f.json()
    assert set(body) == {"object", "data", "model", "usage"} and body["object"] == "list"
    assert body["model"] == "m3e-small"
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(texts)
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(set(d) == {"object", "embedding", "index"} and d["object"] == "embedding" for d in body["data"])
    vecs = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vecs.shape == (2, 512)
    np.testing.assert_allclose(vecs, local_index.embed(texts), atol=1e-4)
    b = client.post("/v1/embeddings", json={"input": texts, "model": "x", "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b["data"]])
    np.testing.assert_allclose(decoded, vecs, atol=1e-6)
    one = client.post("/v1/embeddings", json={"input": "你好", "model": "x"}).json()
    assert len(one["data"]) == 1 and np.allclose(one["data"][0]["embedding"], vecs[0], atol=1e-5)
    # dimensions: the first components, re-normalised
    d = client.post("/v1/embeddings", json={"input": texts, "model": "x", "dimensions": 128}).json()
    short = np.array([x["embedding"] for x in d["data"]])
    assert short.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(short, vecs[:, :128] / np.linalg.norm(vecs[:, :128], axis=1, keepdims=True),
                               atol=1e-5)
    assert len(client.post("/v1/embeddings", json={"input": "x", "dimensions": 512}).json()["data"][0]
               ["embedding"]) == 512
    assert_error(client.post("/v1/embeddings", json={"input": "x", "dimensions": 513}), 422, "validation_error",
                 "513", "1..512")
    assert client.get("/v1/models").json()["data"][0]["id"] == "m3e-small"


def test_openai_python_client(server):
    import openai  # a dev dependency (pyproject [dev])

    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    r = c.embeddings.create(model="m3e-small", input=["你好", "世界"])  # the client asks for base64
    assert len(r.data) == 2 and len(r.data[0].embedding) == 512 and r.data[1].index == 1
    assert r.usage.prompt_tokens > 0 and r.model == "m3e-small"
    f = c.embeddings.create(model="m3e-small", input="你好", encoding_format="float")
    np.testing.assert_allclose(f.data[0].embedding, r.data[0].embedding, atol=1e-6)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        c.embeddings.create(model="m3e-small", input="")
    assert "input[0]" in str(e.value)
    assert [m.id for m in c.models.list()] == ["m3e-small"]


# ------------------------------------------------------------------------------------------------
# bad input: every violation is a 4xx with one error shape, naming the value and the limit
# ------------------------------------------------------------------------------------------------
BAD = [
    ("/search", {"query": ""}, 422, ["query", "at least 1 character"]),
    ("/search", {"query": "   "}, 422, ["query", "non-whitespace"]),
    ("/search", {"queries": []}, 422, ["queries", "at least 1 item"]),
    ("/search", {"queries": ["ok", 3]}, 422, ["queries[1]", "valid string", "got 3"]),
    ("/search", {"queries": ["ok", None]}, 422, ["queries[1]", "got null"]),
    ("/search", {"query": 42}, 422, ["query", "got 42"]),
    ("/search", {"query": ["a"]}, 422, ["query", "valid string"]),
    ("/search", {}, 422, ["exactly one of 'query' and 'queries'"]),
    ("/search", {"query": "a", "queries": ["b"]}, 422, ["exactly one"]),
    ("/search", {"query": "a", "top_k": 0}, 422, ["top_k", "greater than or equal to 1", "got 0"]),
    ("/search", {"query": "a", "top_k": MAX_TOP_K + 1}, 422, ["top_k", f"less than or equal to {MAX_TOP_K}"]),
    ("/search", {"query": "a", "top_k": "5"}, 422, ["top_k", "valid integer"]),
    ("/search", {"query": "a", "top_k": 2.5}, 422, ["top_k"]),
    ("/search", {"query": "a", "min_score": "high"}, 422, ["min_score"]),
    ("/search", {"query": "a", "filter": {"topic": [1]}}, 422, ["filter.topic", "string, number, boolean"]),
    ("/search", {"query": "a", "filter": {"bad field": 1}}, 422, ["bad field"]),
    ("/search", {"query": "a", "filter": {}}, 422, ["filter", "at least 1"]),
    ("/search", {"query": "a", "topk": 3}, 422, ["topk", "Extra inputs are not permitted"]),
    ("/search", {"queries": ["q"] * (MAX_TEXTS + 1)}, 422, ["queries", f"at most {MAX_TEXTS}", f"{MAX_TEXTS + 1}"]),
    ("/search", {"query": "长" * (MAX_CHARS + 1)}, 422, [f"at most {MAX_CHARS} characters",
                                                         f"got {MAX_CHARS + 1} characters"]),
    ("/search", [1, 2], 422, ["request body"]),
    ("/encode", {"texts": []}, 422, ["texts", "at least 1"]),
    ("/encode", {"texts": ["a", {"x": 1}]}, 422, ["texts[1]"]),
    ("/encode", {"texts": "a", "reduce": "yes"}, 422, ["reduce"]),
    ("/v1/embeddings", {"input": ""}, 422, ["input[0]", "at least 1 character"]),
    ("/v1/embeddings", {"input": []}, 422, ["input", "at least 1"]),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 422, ["token-id arrays are not supported"]),
    ("/v1/embeddings", {"input": [[1, 2]]}, 422, ["token-id arrays"]),
    ("/v1/embeddings", {"input": ["a", 7]}, 422, ["input[1]"]),
    ("/v1/embeddings", {"model": "x"}, 422, ["input", "field required"]),
    ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 422, ["encoding_format", "'float' or 'base64'"]),
    ("/v1/embeddings", {"input": "a", "dimensions": 0}, 422, ["dimensions"]),
    ("/v1/embeddings", {"input": "a", "dimensions": "64"}, 422, ["dimensions"]),
    ("/documents", {"documents": []}, 422, ["documents", "at least 1"]),
    ("/documents", {"documents": [{"id": "", "text": "x"}]}, 422, ["documents[0].id"]),
    ("/documents", {"documents": [{"id": "a", "text": " "}]}, 422, ["documents[0].text", "non-whitespace"]),
    ("/documents", {"documents": [{"id": 5, "text": "x"}]}, 422, ["documents[0].id", "got 5"]),
    ("/documents", {"documents": [{"id": "a", "text": "x", "metadata": [1]}]}, 422, ["documents[0].metadata"]),
    ("/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 409,
     ["'a'", "more than once", "nothing was added"]),
]


@pytest.mark.parametrize("path,payload,status,needles", BAD, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(BAD)])
def test_bad_requests(client, path, payload, status, needles):
    before = count(client)
    assert_error(client.post(path, json=payload), status, None, *needles)
    assert count(client) == before


def test_malformed_json_media_type_and_routing_errors(client):
    for raw in (b'{"query": "a"', b"{'query': 'a'}", b"\xff\xfe", b"nul"):
        assert_error(client.post("/search", content=raw, headers={"content-type": "application/json"}), 400,
                     "invalid_json", "not valid JSON")
    assert_error(client.post("/search", content=b"query=a", headers={"content-type": "application/x-www-form-"
                                                                                     "urlencoded"}),
                 415, "unsupported_media_type", "application/json")
    assert_error(client.post("/search"), 422, "validation_error", "request body is required")
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/search"), 405, "method_not_allowed")
    assert_error(client.delete("/documents/no-such-id"), 404, "not_found", "no-such-id")
    assert_error(client.get("/documents/no-such-id"), 404, "not_found", "no-such-id")


def test_huge_payloads_are_refused(client, server):
    big = json.dumps({"query": "长" * (MAX_BODY // 2)}).encode()  # > MAX_BODY bytes in UTF-8
    assert_error(client.post("/search", content=big, headers={"content-type": "application/json"}), 413,
                 "payload_too_large", str(len(big)), str(MAX_BODY))

    def chunks():  # no Content-Length: the limit is applied while reading
        for _ in range(64):
            yield b" " * 4096
        yield b'{"query": "a"}'

    assert_error(client.post("/search", content=chunks(), headers={"content-type": "application/json"}), 413,
                 "payload_too_large", str(MAX_BODY))
    assert_error(client.post("/v1/embeddings", json={"input": ["很长的句子" * 40] * 200}), 413, "payload_too_large")
    assert client.get("/health").status_code == 200 and server.alive()


def test_the_published_schema_states_every_rule_the_server_enforces(client):
    spec = client.get("/openapi.json").json()
    comp = spec["components"]["schemas"]
    search = comp["SearchRequest"]
    assert [o["required"] for o in search["oneOf"]] == [["query"], ["queries"]]  # exactly one of the two
    pattern = search["properties"]["query"]["anyOf"][0]["pattern"]
    # non-blank: the pattern matches exactly the strings the server accepts (whitespace as str.isspace)
    for text, ok in (("a", True), (" 中 ", True), ("   ", False), ("\u3000\t", False), ("\x1d", False)):
        assert (re.search(pattern, text) is not None) == ok, text
        r = client.post("/search", json={"query": text, "top_k": 1})
        assert r.status_code == (200 if ok else 422), (text, r.text)
    dims = comp["EmbeddingsRequest"]["properties"]["dimensions"]["anyOf"][0]
    assert dims["type"] == "integer" and dims["minimum"] == 1 and dims["maximum"] == 512
    # JSON Schema integers include 4.0: accepted as 4, as documented; 2.5, "4" and true are not integers
    r = client.post("/v1/embeddings", json={"input": "你好", "dimensions": 4.0})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 4
    assert len(client.post("/search", json={"query": "你好", "top_k": 3.0}).json()["results"][0]["hits"]) == 3
    for bad in (2.5, "4", True):
        assert_error(client.post("/v1/embeddings", json={"input": "x", "dimensions": bad}), 422, None, "dimensions")
    docs = spec["paths"]["/documents"]["post"]["responses"]
    assert "409" in docs and "403" in docs  # duplicate/existing ids; read-only servers


def test_405_names_every_method_of_the_path(client):
    r = client.post("/documents/some-id")
    assert_error(r, 405, "method_not_allowed", "POST", "DELETE, GET")
    assert r.headers["allow"] == "DELETE, GET"
    r = client.put("/search", json={})
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


def test_docs_page_renders_offline_in_headless_chromium(client, server, tmp_path):
    from ._browser import Chromium

    html = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert re.findall(r'(?:src|href)="(https?:)?//', html) == []
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    with Chromium(tmp_path) as browser:  # the machine has no internet: it renders only from local assets
        ops = asyncio.run(browser.docs_page(server.url + "/docs"))
    assert {"POST /search", "POST /v1/embeddings", "DELETE /documents/{doc_id}"} <= set(ops), ops


def test_disconnected_clients_cost_no_encoder_time(client, server):
    before = client.get("/metrics").text
    n, per = 24, 16

    async def impatient():
        async with httpx.AsyncClient(base_url=server.url) as c:
            async def one(i):
                try:
                    await c.post("/v1/embeddings", json={"input": [f"没耐心的请求 {i} {j}" for j in range(per)]},
                                 timeout=0.05)
                except httpx.TimeoutException:
                    pass
            await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(impatient())

    def delta(name):
        return _metric(client.get("/metrics").text, name) - _metric(before, name)

    for _ in range(1200):  # until every text is accounted for (a batch already running finishes first)
        encoded, dropped = delta("embedkit_texts_encoded_total"), delta("embedkit_texts_abandoned_total")
        if encoded + dropped >= n * per:
            break
        threading.Event().wait(0.1)
    assert dropped > 0 and encoded < n * per, (encoded, dropped)
    assert encoded + dropped == n * per  # every text was either encoded or dropped unencoded, none twice
    assert server.alive()


# ------------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------------
def test_add_search_delete_search(client, index_dir):
    from embedkit.index import current_generation, read_manifest

    n0 = count(client)
    doc = {"id": "api-new-1", "text": "火星探测器什么时候发射升空", "metadata": {"topic": "航天", "n": 1}}
    r = client.post("/documents", json={"documents": [doc]})
    assert r.status_code == 201, r.text
    assert r.json() == {"added": 1, "ids": ["api-new-1"], "count": n0 + 1}
    assert read_manifest(current_generation(index_dir))["count"] == n0 + 1  # persisted before the answer
    hits = client.post("/search", json={"query": "火星探测器发射", "top_k": 1}).json()["results"][0]["hits"]
    assert hits[0]["id"] == "api-new-1" and hits[0]["metadata"] == {"topic": "航天", "n": 1}
    assert client.post("/search", json={"query": "火星", "filter": {"n": 1}}).json()["results"][0]["hits"][0][
        "id"] == "api-new-1"
    assert client.get("/documents/api-new-1").json()["text"] == doc["text"]
    assert_error(client.post("/documents", json={"documents": [doc]}), 409, "conflict", "api-new-1")
    assert count(client) == n0 + 1
    r = client.delete("/documents/api-new-1")
    assert r.status_code == 200 and r.json() == {"deleted": 1, "id": "api-new-1", "count": n0}
    assert read_manifest(current_generation(index_dir))["count"] == n0
    hits = client.post("/search", json={"query": "火星探测器发射", "top_k": 5}).json()["results"][0]["hits"]
    assert "api-new-1" not in [h["id"] for h in hits]
    assert_error(client.delete("/documents/api-new-1"), 404, "not_found", "api-new-1")
    # ids may contain slashes and non-ASCII
    r = client.post("/documents", json={"documents": [{"id": "a/b 文档", "text": "路径里的斜杠"}]})
    assert r.status_code == 201
    assert client.delete("/documents/a/b 文档").json()["deleted"] == 1


def test_concurrent_adds_during_searches(client, server, index_dir):
    from embedkit.index import current_generation, read_manifest

    n0 = count(client)
    stop = threading.Event()
    statuses: list[int] = []

    def searcher(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/search", json={"queries": [BANK_QUERY, f"查询 {i}"], "top_k": 3})
                statuses.append(r.status_code)
                assert len(r.json()["results"]) == 2

    new_ids = [f"conc-{i}" for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(searcher, i) for i in range(3)]
        try:
            for i, doc_id in enumerate(new_ids):
                r = client.post("/documents", json={"documents": [{"id": doc_id, "text": f"并发写入的第{i}条文档"}]})
                assert r.status_code == 201, r.text
        finally:
            stop.set()
        for f in futs:
            f.result()
    assert statuses and set(statuses) == {200}
    assert count(client) == n0 + len(new_ids) == read_manifest(current_generation(index_dir))["count"]
    for doc_id in new_ids:
        assert client.get(f"/documents/{doc_id}").status_code == 200
        assert client.delete(f"/documents/{doc_id}").status_code == 200
    assert count(client) == n0


# ------------------------------------------------------------------------------------------------
# faults, batching, metrics
# ------------------------------------------------------------------------------------------------
def _raw_http(port: int, data: bytes, read: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return s.recv(65536) if read else b""


def test_clients_that_disconnect_mid_request(client, server):
    body = json.dumps({"queries": [BANK_QUERY] * 8}).encode()
    head = (f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    _raw_http(server.port, head + body[:10])  # hangs up halfway through the body
    _raw_http(server.port, head + body)  # hangs up before the answer
    _raw_http(server.port, b"POST /search HTTP/1.1\r\nHost")  # hangs up inside the headers
    reply = _raw_http(server.port, b"GARBAGE\r\n\r\n", read=True)
    assert reply.startswith(b"HTTP/1.1 4")

    async def impatient():  # many clients that give up while their texts are queued or encoding
        async with httpx.AsyncClient(base_url=server.url) as c:
            async def one(i):
                try:
                    await c.post("/v1/embeddings", json={"input": [f"放弃的请求 {i}"] * 16}, timeout=0.01)
                except httpx.TimeoutException:
                    pass
            await asyncio.gather(*(one(i) for i in range(24)))

    asyncio.run(impatient())
    assert server.alive()
    r = client.post("/search", json={"query": BANK_QUERY, "top_k": 1})
    assert r.status_code == 200 and r.json()["results"][0]["hits"][0]["metadata"]["topic"] == "银行卡与信用卡"


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_requests_share_encoder_batches_and_metrics(client, server):
    before = client.get("/metrics").text
    n = 16

    def one(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v1/embeddings", json={"input": f"并发请求 {i}", "model": "m"})

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    assert [r.status_code for r in results] == [200] * n
    after = client.get("/metrics").text
    calls = _metric(after, "embedkit_batch_requests_count") - _metric(before, "embedkit_batch_requests_count")
    merged = _metric(after, "embedkit_batch_requests_sum") - _metric(before, "embedkit_batch_requests_sum")
    assert merged == n and 1 <= calls < n  # requests were merged into fewer encoder calls
    for name in ("embedkit_requests_total", "embedkit_request_duration_seconds_bucket", "embedkit_batch_size_bucket",
                 "embedkit_queue_depth", "embedkit_index_documents", "embedkit_queue_rejections_total"):
        assert name in after, name
    assert 'endpoint="/v1/embeddings",method="POST",status="200"' in after
    assert 'endpoint="/documents/{doc_id:path}"' in after  # route templates, never raw ids
    assert "conc-1" not in after
    assert _metric(after, "embedkit_index_documents") == count(client)


# ------------------------------------------------------------------------------------------------
# the search page in headless Chromium
# ------------------------------------------------------------------------------------------------
def test_search_page_in_headless_chromium(server, tmp_path):
    from ._browser import Chromium

    with Chromium(tmp_path) as browser:
        rows = asyncio.run(browser.search_page(server.url + "/", BANK_QUERY))
    assert len(rows) == 10, rows  # the page's default top_k
    assert rows[0]["meta"] == ["topic: 银行卡与信用卡"] and "信用卡" in rows[0]["text"]
    assert all(re.fullmatch(r"-?[01]\.\d{4}", r["score"]) for r in rows), rows
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    assert all(r["id"] for r in rows)


def test_zz_server_survived_everything_without_a_traceback(server, client):
    assert server.alive() and client.get("/health").status_code == 200
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
