"""Regression tests for issue 19, the service side: hostile JSON (NaN metadata, huge integers, lone
surrogates) gets a 422 naming the field and no traceback; API keys that could never work are refused
at start; 503s are counted; 4xx messages do not carry the server's paths; HEAD works on GET routes.
The real app in-process (TestClient) over a real index (the tiny random BERT)."""

import json
import logging

import pytest

from embedkit.server.settings import Settings

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder):
    from embedkit.corpus import Doc
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("api-defects") / "idx"
    docs = [Doc(f"d{i}", f"第{i}篇文档，关于信用卡和快递。", {"topic": "a" if i % 2 else "b", "n": i}) for i in range(30)]
    EmbedIndex.build(d, docs, encoder=tiny_encoder, index="flat")
    return EmbedIndex.load(d, encoder=tiny_encoder)


@pytest.fixture
def client(served):
    from fastapi.testclient import TestClient

    from embedkit.server import create_app

    with TestClient(create_app(Settings(served.directory), index=served), raise_server_exceptions=False) as c:
        yield c


def _error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    return body["error"]["message"]


# -- defect 2 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_post_documents_refuses_non_finite_metadata_naming_the_field(client, served, literal, caplog):
    body = '{"documents": [{"id": "nan-1", "text": "新的文档", "metadata": {"topic": "a", "x": %s}}]}' % literal
    with caplog.at_level(logging.INFO):
        msg = _error(client.post("/documents", content=body, headers=JSON), 422)
    assert "'x'" in msg and "finite" in msg, msg
    assert served.get("nan-1") is None
    assert client.get("/documents/nan-1").status_code == 404
    r = client.post("/search", json={"query": "信用卡", "filter": {"topic": "a"}, "top_k": 50})
    assert r.status_code == 200 and len(r.json()["results"][0]["hits"]) == 15
    assert "Traceback" not in caplog.text


# -- defect 5 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [2 ** 64, -(2 ** 63) - 1, 10 ** 40])
def test_a_filter_integer_beyond_64_bits_is_a_422_naming_the_value(client, value, caplog):
    with caplog.at_level(logging.INFO):
        msg = _error(client.post("/search", json={"query": "信用卡", "filter": {"n": value}}), 422)
    assert str(value) in msg and "64-bit" in msg
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_filter_value_is_a_422_that_says_so(client, literal, caplog):
    with caplog.at_level(logging.INFO):
        msg = _error(client.post("/search", content='{"query": "信用卡", "filter": {"n": %s}}' % literal,
                                 headers=JSON), 422)
    assert "finite" in msg and "64-bit" not in msg, msg
    assert "Traceback" not in caplog.text


def test_min_score_beyond_its_published_range_is_refused_as_the_schema_says(client):
    prop = client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]["properties"]["min_score"]
    bound = next(s for s in prop["anyOf"] if s.get("type") == "number")
    assert bound["maximum"] == -bound["minimum"] > 1  # a stated, finite range
    assert client.post("/search", json={"query": "信用卡", "min_score": bound["maximum"]}).status_code == 200
    msg = _error(client.post("/search", content='{"query": "信用卡", "min_score": %s}' % ("9" * 400), headers=JSON), 422)
    assert "min_score" in msg, msg


@pytest.mark.parametrize("body", [
    '{"query": "信用卡", "filter": {"topic": "\\ud800"}}',
    '{"query": "\\ud800"}',
    '{"queries": ["ok", "a\\udfffb"]}',
])
def test_a_lone_surrogate_in_a_search_is_a_422(client, body, caplog):
    with caplog.at_level(logging.INFO):
        msg = _error(client.post("/search", content=body, headers=JSON), 422)
    assert "\\ud" in msg or "surrogate" in msg, msg
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("doc", ['{"id": "\\ud800", "text": "文本"}', '{"id": "s1", "text": "文本\\ud800"}',
                                 '{"id": "s2", "text": "文本", "metadata": {"k": "\\udc00"}}'])
def test_a_lone_surrogate_in_a_document_is_a_422(client, served, doc, caplog):
    with caplog.at_level(logging.INFO):
        _error(client.post("/documents", content='{"documents": [%s]}' % doc, headers=JSON), 422)
    assert served.get("s1") is None and served.get("s2") is None
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_validation_echo_of_a_surrogate_is_sent_escaped():
    from fastapi.exceptions import RequestValidationError

    from embedkit.server.errors import error_response, to_error

    exc = RequestValidationError([{"type": "string_type", "loc": ("body", "query"), "msg": "bad", "input": "x\ud800"}])
    status, type_, message, _ = to_error(exc)
    r = error_response(status, type_, message)
    assert status == 422 and json.loads(r.body)["error"]["message"].endswith('(got "x\\ud800")')


# -- defect 12 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,why", [(" ", "only whitespace"), ("\t\n", "only whitespace"),
                                     (" sekret", "leading or trailing"), ("sekret ", "leading or trailing"),
                                     ("sékret", "U\\+00E9"), ("密钥", "U\\+5BC6")])
def test_an_api_key_that_could_never_authenticate_is_refused_at_start(tmp_path, key, why):
    from embedkit.errors import InputError

    with pytest.raises(InputError, match=why):
        Settings(tmp_path, api_key=key)
    with pytest.raises(InputError, match=why):
        Settings.from_env(tmp_path, environ={"EMBEDKIT_API_KEY": key})


def test_queue_rejections_are_counted(client, served, monkeypatch):
    from embedkit.server.batching import QueueFullError

    svc = client.app.state.service

    async def full(texts, **kw):
        raise QueueFullError(2048, len(texts), 2048)

    monkeypatch.setattr(svc.batcher, "submit", full)
    for _ in range(3):
        r = client.post("/search", json={"query": "信用卡"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    monkeypatch.undo()
    assert "embedkit_queue_rejections_total 3.0" in client.get("/metrics").text


def test_4xx_messages_do_not_carry_the_servers_index_path(client, served):
    r = client.post("/search", json={"query": "信用卡", "min_probability": 0.5})
    msg = _error(r, 422)
    assert "calibrat" in msg
    for form in (str(served.directory), str(served.directory.resolve()), str(served.directory.parent)):
        assert form not in r.text
    r = client.post("/search", json={"query": "信用卡", "mode": "lexical"})
    assert r.status_code == 422 and str(served.directory.parent) not in r.text


def test_head_on_get_routes_is_the_get_answer_without_a_body(client):
    for path in ("/health", "/info", "/v1/models", "/documents/d1"):
        get, head = client.get(path), client.head(path)
        assert get.status_code == head.status_code == 200, (path, head.text)
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert client.head("/documents/nope").status_code == 404
    r = client.head("/search")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
