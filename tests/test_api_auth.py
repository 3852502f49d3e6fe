"""The REST service with an API key (from EMBEDKIT_API_KEY), micro-batching off, and servers that must
refuse to start. Plumbing only: the fast random model."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ._api_util import Server, assert_error, demo_docs, run_serve, serve_env

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_encoder):
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("api-auth") / "idx"
    EmbedIndex.build(d, demo_docs(every=10), encoder=tiny_encoder, index="flat")
    return d


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    srv = Server(index_dir, tmp_path_factory.mktemp("api-auth-log") / "server.log", "--no-batching",
                 "--max-queue", "64", "--max-texts", "8", env=serve_env(EMBEDKIT_API_KEY=KEY))
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_open_endpoints_need_no_key(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert httpx.get(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/docs").status_code == 200
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


@pytest.mark.parametrize("method,path,payload", [
    ("POST", "/search", {"query": "信用卡"}),
    ("POST", "/encode", {"texts": ["你好"]}),
    ("POST", "/v1/embeddings", {"input": "你好", "model": "m"}),
    ("POST", "/documents", {"documents": [{"id": "x", "text": "y"}]}),
    ("DELETE", "/documents/bank-001", None),
    ("GET", "/info", None),
    ("GET", "/metrics", None),
])
def test_protected_endpoints_need_the_key(server, method, path, payload):
    r = httpx.request(method, server.url + path, json=payload)
    assert_error(r, 401, "unauthorized", "missing API key", "Bearer")
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.request(method, server.url + path, json=payload, headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "unauthorized", "invalid API key")
    assert KEY not in r.text
    r = httpx.request(method, server.url + path, json=payload, headers={"Authorization": KEY})  # no scheme
    assert r.status_code == 401


def test_with_the_key_everything_works_and_batching_is_off(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as c:
        info = c.get("/info").json()
        assert info["settings"]["batching"] is False and info["settings"]["auth"] is True
        assert KEY not in c.get("/info").text
        assert c.post("/search", json={"query": "信用卡", "top_k": 3}).status_code == 200
        r = c.post("/documents", json={"documents": [{"id": "auth-1", "text": "新文档"}]})
        assert r.status_code == 201
        assert c.delete("/documents/auth-1").status_code == 200
        assert_error(c.post("/search", json={"queries": ["q"] * 9}), 422, "validation_error", "at most 8")

        def one(i):
            return c.post("/v1/embeddings", json={"input": [f"句子{i}"] * 8})

        with ThreadPoolExecutor(16) as pool:  # each request is its own encoder call; the queue holds 64 texts
            replies = list(pool.map(one, range(32)))
        codes = [r.status_code for r in replies]
        assert set(codes) <= {200, 503} and 200 in codes
        for r in replies:
            if r.status_code == 503:  # refused, not queued without bound
                assert_error(r, 503, "overloaded", "limit 64")
                assert r.headers["retry-after"] == "1"
        metrics = c.get("/metrics").text
        assert "embedkit_batch_requests_bucket{le=\"1.0\"}" in metrics
        # with batching off, no encoder call ever serves more than one request
        lines = metrics.splitlines()
        count = next(float(x.split()[-1]) for x in lines if x.startswith("embedkit_batch_requests_count"))
        le1 = next(float(x.split()[-1]) for x in lines
                   if x.startswith('embedkit_batch_requests_bucket{le="1.0"}'))
        assert count == le1 > 0


def test_openai_client_sends_the_key(server):
    import openai

    ok = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    r = ok.embeddings.create(model="tiny", input=["你好"])
    assert len(r.data[0].embedding) == 128
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="tiny", input=["你好"])


# ------------------------------------------------------------------------------------------------
# an index directory that cannot be loaded: the server refuses to start, with one clear line
# ------------------------------------------------------------------------------------------------
def test_refuses_to_start_without_an_index(tmp_path):
    r = run_serve([str(tmp_path / "missing"), "--port", "0"])
    assert r.returncode != 0
    assert "cannot serve index" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_serve([str(tmp_path / "empty"), "--port", "0"])
    assert r.returncode != 0 and "not a complete embedkit index" in r.stderr and "Traceback" not in r.stderr


def test_refuses_to_start_when_the_index_cannot_be_loaded(index_dir, tmp_path):
    """Passes the cheap pre-checks, fails in the app's lifespan (here: the recorded model is gone)."""
    import json

    from embedkit.index import current_generation

    bad = tmp_path / "moved"
    shutil.copytree(index_dir, bad)
    manifest = current_generation(bad) / "manifest.json"
    m = json.loads(manifest.read_text(encoding="utf-8"))
    m["encoder"]["model"] = str(tmp_path / "model-that-was-moved")
    manifest.write_text(json.dumps(m), encoding="utf-8")
    r = run_serve([str(bad), "--port", "0"])
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "the server did not start: cannot serve index" in out and "model-that-was-moved" in out, out
    assert "Traceback" not in out, out
