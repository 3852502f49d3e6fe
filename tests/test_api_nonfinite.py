"""Issue 19: REST with non-standard JSON, against one real ``embedkit serve``.

schemathesis (tests/test_api_schemathesis.py) cannot send it: 4.32.5 draws every number with
``allow_nan=False, allow_infinity=False`` and has no option to change that (``st run --help``: only
``--generation-allow-x00`` and ``--generation-codec`` shape the data). So hypothesis does it here: it takes
a valid body of every operation of the server's OpenAPI document that has a JSON body, replaces one to
three random nodes of it (leaves and whole subtrees: nested metadata values, filter values, ``top_k``,
``min_score``, ``dimensions``, texts, pairs ...) with the raw tokens ``NaN``, ``Infinity``, ``-Infinity``,
``1e999`` or integers beyond 64 bits (one past the 4300-digit limit of Python's int parsing), and sends
the text as written. Every answer must be a 4xx in the error shape naming a replaced field (a number
too long to parse: naming the problem), never a 5xx; the server log has no traceback; nothing committed
is lost and nothing is added. (tests/test_hostile_input.py sends fixed hostile values per field; this
is the randomised, every-operation counterpart for non-standard numbers.)"""

from __future__ import annotations

import copy
import json

import httpx
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from embedkit.corpus import Doc

from ._api_util import assert_error, serving

pytestmark = pytest.mark.slow

SEED = Doc("seed", "种子文档：信用卡额度太低能调高吗", {"topic": "bank", "n": 1})
VALID = {  # one valid body per JSON-body operation, with nested values to replace
    ("post", "/search"): {"query": "信用卡 额度", "top_k": 3, "min_score": -1.0, "mode": "dense",
                          "filter": {"topic": "bank", "n": 1, "ok": True}},
    ("post", "/similarity"): {"pairs": [["花呗 怎么 还款", "花呗 如何 还款"], ["银行", "快递"]]},
    ("post", "/encode"): {"texts": ["文本 一", "文本 二"], "reduce": True, "normalize": True},
    ("post", "/v1/embeddings"): {"input": ["文本", "另一个"], "model": "tiny", "encoding_format": "float",
                                 "dimensions": 8, "user": "u"},
    ("post", "/documents"): {"documents": [{"id": "nf-new", "text": "新 文档", "metadata": {
        "n": 1, "x": 1.5, "s": "串", "tags": ["a", 2, 0.5], "nested": {"deep": {"v": 3}, "list": [1, {"w": -2}]}}}]},
}
TOKENS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", str(2 ** 64), str(-(2 ** 64) - 1), "1" + "0" * 400,
          "9" * 4301)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_encoder):
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("nonfinite") / "idx"
    others = [Doc(f"d{i}", f"第{i}篇文档，关于快递和退款。", {"topic": "shop", "n": i}) for i in range(5)]
    EmbedIndex.build(d, [SEED, *others], encoder=tiny_encoder, index="flat")
    with serving(d, tmp_path_factory.mktemp("nonfinite-log") / "server.log", "--backend", "torch",
                 "--max-top-k", "20") as srv:
        yield srv


def _paths(node, path=()):
    """The path of every node below the root."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield path + (k,)
        yield from _paths(v, path + (k,))


def _set(body, path, value) -> None:
    for k in path[:-1]:
        body = body[k]
    body[path[-1]] = value


def _render(path) -> str:
    """A field as the server's messages name it: ``documents[0].text``; inside metadata, the metadata
    rule's own ``metadata field 'nested.list[1]'``."""
    def join(parts) -> str:
        out = ""
        for p in parts:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out

    if "metadata" in path[:-1]:
        i = path.index("metadata")
        return f"metadata field '{join(path[i + 1:])}'"
    return join(path)


@st.composite
def mutated(draw, op):
    """``op``'s valid body with 1-3 nodes (none inside another) replaced by raw tokens: (text, paths, tokens)."""
    body = copy.deepcopy(VALID[op])
    chosen = draw(st.lists(st.sampled_from(list(_paths(body))), min_size=1, max_size=3, unique=True))
    chosen = [p for p in chosen if not any(q != p and p[:len(q)] == q for q in chosen)]
    tokens = [draw(st.sampled_from(TOKENS)) for _ in chosen]
    for n, p in enumerate(chosen):
        _set(body, p, f"@@raw{n}@@")
    text = json.dumps(body, ensure_ascii=False)
    for n, token in enumerate(tokens):
        text = text.replace(f'"@@raw{n}@@"', token)
    return text, chosen, tokens


def test_every_json_body_operation_has_a_valid_body_here(server):
    """The table above covers exactly the operations with a JSON body, and each body is accepted."""
    spec = httpx.get(server.url + "/openapi.json", timeout=60).json()
    ops = {(m, p) for p, item in spec["paths"].items() for m, o in item.items()
           if "application/json" in o.get("requestBody", {}).get("content", {})}
    assert ops == set(VALID), ops ^ set(VALID)
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for (method, path), body in VALID.items():
            r = c.request(method.upper(), path, json=body)
            assert r.status_code in (200, 201), (path, r.status_code, r.text[:300])
        assert c.delete("/documents/nf-new").status_code == 200
        # min_score's published range is +-1e9 (scores are cosines, BM25 or fused): beyond it, refused by name
        for big, status in (("1000000000", 200), (str(2 ** 64), 422), ("1" + "0" * 400, 422)):
            r = c.post("/search", content=f'{{"query": "信用卡", "min_score": {big}}}'.encode(),
                       headers={"content-type": "application/json"})
            assert r.status_code == status, r.text[:300]
            assert r.json()["results"][0]["hits"] == [] if status == 200 else "min_score" in assert_error(r, 422)


@settings(max_examples=40, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cases=st.tuples(*[mutated(op) for op in sorted(VALID)]))
def test_non_standard_numbers_anywhere_are_a_4xx_naming_the_field(server, cases):
    """Each example: one mutated body per operation (40 examples, 200 requests)."""
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for (method, path), (text, chosen, tokens) in zip(sorted(VALID), cases):
            r = c.request(method.upper(), path, content=text.encode(), headers={"content-type": "application/json"})
            if "9" * 4301 in tokens:
                assert_error(r, 400, "invalid_json", "4301 digits")  # beyond the parser: the body is refused whole
                continue
            msg = assert_error(r, 422)
            assert any(_render(p) in msg for p in chosen), (path, text[:300], [_render(p) for p in chosen], msg)
        assert c.get("/health").json()["count"] == 6  # nothing added, nothing lost
        assert c.get(f"/documents/{SEED.id}").json() == {"id": SEED.id, "text": SEED.text, "metadata": SEED.metadata}
    assert "Traceback" not in server.log(), server.log()[-3000:]
