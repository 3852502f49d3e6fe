"""Issue 19, item 4: hostile input everywhere input enters — the library, the CLI (JSONL, TSV, search) and
REST against one real ``embedkit serve``. Every case is a clear error naming the field (InputError; exit 1
with one ``embedkit: error:`` line; a 4xx in the error shape), never a crash, a 5xx or a traceback in the
server log, and nothing committed is lost. The few values that are legitimately data (NUL, whitespace in
metadata, ...) are listed in ``ACCEPTED`` with the behaviour that is right, and checked to round-trip."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from embedkit.cli import cli
from embedkit.corpus import Doc
from embedkit.errors import InputError

from ._api_util import serve_env, serving
from .conftest import ROOT, TINY

pytestmark = pytest.mark.slow

SEED = Doc("seed", "种子文档：信用卡额度太低能调高吗", {"topic": "bank", "n": 1})
OTHERS = [Doc(f"d{i}", f"第{i}篇文档，关于快递和退款。", {"topic": "shop", "n": i}) for i in range(8)]


def _deep(n: int):
    out = "leaf"
    for _ in range(n):
        out = {"a": out}
    return out


HOSTILE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "2**64": 2 ** 64, "-2**64": -(2 ** 64),
           "surrogate": "\ud800", "nul": "\x00", "deep100": _deep(100), "1MB": "x" * (1 << 20), "empty": "",
           "whitespace": " \t\n ", "list": ["x"], "object": {"a": 1}, "null": None, "bool": True, "float": 1.5}
FIELDS = ("id", "text", "metadata", "filter", "query")
# Values that are data, not errors, per field (anything else must be refused):
ACCEPTED = {
    # ids are opaque exact strings in the library: NUL, whitespace and long ones are stored and found again.
    ("library", "id"): {"nul", "whitespace", "1MB"},
    # NUL is a valid character; a 1 MB text is read up to the encoder's window (truncate split here).
    ("library", "text"): {"nul", "1MB"},
    # metadata values: any JSON value within the rules (finite, 64-bit, <= 32 levels, valid UTF-8).
    ("library", "metadata"): {"nul", "1MB", "empty", "whitespace", "list", "object", "null", "bool", "float"},
    # a filter value that no document has simply matches nothing; null means "field is null or absent".
    ("library", "filter"): {"nul", "1MB", "empty", "whitespace", "null", "bool", "float"},
    # a query string of any valid content is a query (the encoder reads its window); a list is a batch.
    ("library", "query"): {"nul", "1MB", "list"},
}
ACCEPTED[("rest", "id")] = {"nul"}  # REST ids: 1..256 characters, not blank (the schema's rule)
ACCEPTED[("rest", "text")] = {"nul"}  # REST texts: at most --max-chars
ACCEPTED[("rest", "metadata")] = ACCEPTED[("library", "metadata")]  # a 1 MB value fits the default body limit
ACCEPTED[("rest", "filter")] = ACCEPTED[("library", "filter")]
ACCEPTED[("rest", "query")] = {"nul"}  # `query` is one string (`queries` is the list form)


def _doc_case(field: str, name: str, value) -> dict:
    doc = {"id": f"h-{field}-{name}", "text": "一篇普通的文档", "metadata": {"k": 1}}
    doc["metadata" if field == "metadata" else field] = {"f": value} if field == "metadata" else value
    return doc


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoder):
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("hostile") / "idx"
    EmbedIndex.build(d, [SEED, *OTHERS], encoder=tiny_encoder, index="flat", split="truncate")
    return d


def _seed_found(hits) -> bool:
    return hits[0].id == SEED.id


# ------------------------------------------------------------------------------------------------
# (a) the library
# ------------------------------------------------------------------------------------------------
def _library_call(idx, field, value, doc_id):
    if field in ("id", "text", "metadata"):
        d = _doc_case(field, doc_id, value)
        return idx.add([Doc(d["id"], d["text"], d["metadata"])])
    if field == "filter":
        return idx.search(SEED.text, 3, filter={"topic": value})
    return idx.search(value, 3)


def test_the_library_refuses_hostile_values_naming_the_field(built, tiny_encoder, tmp_path):
    import shutil

    from embedkit.index import EmbedIndex

    d = tmp_path / "idx"
    shutil.copytree(built, d)
    idx = EmbedIndex.load(d, encoder=tiny_encoder)
    before = len(idx)
    outcome, added = {}, []
    for field in FIELDS:
        for name, value in HOSTILE.items():
            try:
                _library_call(idx, field, value, name)
                outcome[(field, name)] = "ok"
                if field in ("id", "text", "metadata"):
                    added.append(value if field == "id" else f"h-{field}-{name}")
            except InputError as e:
                msg = str(e)
                named = {"id": "id", "text": "text", "metadata": "metadata field 'f", "filter": "filter",
                         "query": "quer"}[field]
                outcome[(field, name)] = "error" if named in msg and "Traceback" not in msg else f"unclear: {msg[:150]}"
    wrong = {k: v for k, v in outcome.items() if v != ("ok" if k[1] in ACCEPTED[("library", k[0])] else "error")}
    assert not wrong, wrong
    # ids, gets and deletes of hostile values: refused by type, or simply not there
    for name, value in HOSTILE.items():
        if isinstance(value, str) and name not in ("surrogate",):
            assert idx.get(value) is None or value in added
            continue
        with pytest.raises(InputError):
            idx.get(value)
        with pytest.raises(InputError):
            idx.delete([value])
    for doc_id in added:  # what was accepted round-trips exactly, and can be deleted
        hit = idx.get(doc_id)
        assert hit is not None and hit.id == doc_id
    assert idx.delete(added) == len(added)
    assert len(idx) == before and _seed_found(idx.search(SEED.text, 1)[0])
    reloaded = EmbedIndex.load(d, encoder=tiny_encoder)
    assert len(reloaded) == before and reloaded.check() == []


def test_library_metadata_integers_beyond_64_bits_are_refused(built, tiny_encoder, tmp_path):
    import shutil

    from embedkit.index import EmbedIndex

    d = tmp_path / "idx"
    shutil.copytree(built, d)
    idx = EmbedIndex.load(d, encoder=tiny_encoder)
    for v in (2 ** 63, -(2 ** 63) - 1, 10 ** 30):
        with pytest.raises(InputError, match=rf"metadata field 'f.g' is {v}, beyond the 64-bit integers"):
            idx.add([Doc("big", "文本", {"f": {"g": v}})])
    assert idx.add([Doc("edge", "文本", {"f": 2 ** 63 - 1})]) == 1  # the largest 64-bit integer is fine
    assert idx.search(SEED.text, 5, filter={"f": 2 ** 63 - 1})[0][0].id == "edge"


# ------------------------------------------------------------------------------------------------
# (b) the CLI: JSONL and TSV corpora, search arguments
# ------------------------------------------------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)


def _refused(r, *needles):
    out = r.output  # stdout and stderr, as the user sees them
    assert r.exit_code == 1, (r.exit_code, out[-2000:])
    errors = [line for line in out.splitlines() if line.startswith("embedkit: error:")]
    assert len(errors) == 1 and "Traceback" not in out, out[-2000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _jsonl_line(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=True, allow_nan=True)  # NaN/Infinity literals, \ud800 escapes


JSONL_CASES = [(f, n) for f in ("id", "text", "metadata") for n in HOSTILE if (f, n) != ("text", "1MB")]


def test_cli_add_from_jsonl_refuses_hostile_values(built, tmp_path):
    import shutil

    d = tmp_path / "idx"
    shutil.copytree(built, d)
    accepted = 0
    for field, name in JSONL_CASES:
        corpus = tmp_path / f"{field}-{name}.jsonl"
        corpus.write_text(_jsonl_line(_doc_case(field, name, HOSTILE[name])) + "\n", encoding="utf-8")
        r = _cli("index", "add", d, corpus)
        lib_ok = name in ACCEPTED[("library", field)]
        if field == "id" and name in ("empty", "null"):
            lib_ok = False  # JSONL: an empty id, or null, is refused (a blank one is an id, as in the library)
        if field == "id" and name in ("2**64", "-2**64"):
            lib_ok = True  # JSONL ids may be integers (any size): they become the string of the number
        if lib_ok:
            assert r.exit_code == 0, (field, name, r.output[-500:])
            accepted += 1
            continue
        # file and line named (an empty or blank text is skipped as an empty line; then the file has none)
        where = f"{field}-{name}.jsonl" + ("" if (field, name) in (("text", "empty"), ("text", "whitespace")) else ":1")
        try:
            _refused(r, where)
        except AssertionError as e:
            raise AssertionError((field, name)) from e
    r = _cli("search", d, SEED.text, "-k", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["hits"][0]["id"] == SEED.id
    r = _cli("index", "info", d)
    assert r.exit_code == 0 and json.loads(r.stdout)["count"] == 1 + len(OTHERS) + accepted


@pytest.mark.parametrize("line,needle", [
    ("\x00id\t文本", None), ("\t没有编号的文本", "id"), ("a\t", "text"), ("b\t   ", "text"),
    ("c\t" + "文" * 10, None), ("d\t\ud800", "UTF-8")])
def test_cli_add_from_tsv(built, tmp_path, line, needle):
    import shutil

    d = tmp_path / "idx"
    shutil.copytree(built, d)
    corpus = tmp_path / "c.tsv"
    corpus.write_bytes(("id\ttext\n" + line + "\n").encode("utf-8", "surrogatepass"))
    r = _cli("index", "add", d, corpus, "--id-column", "id", "--column", "text")
    if needle is None:
        assert r.exit_code == 0, r.output
    else:
        _refused(r, "c.tsv", needle)


def test_cli_build_from_jsonl_with_hostile_values_leaves_no_index(tmp_path):
    for i, doc in enumerate([{"id": 1.5, "text": "x"}, {"id": "a", "text": "x", "metadata": {"v": float("inf")}},
                             {"id": "a", "text": "\ud800"}, {"id": "a", "text": "x", "metadata": _deep(100)},
                             {"id": "a", "text": "x", "metadata": {"v": -(2 ** 64)}}]):
        corpus = tmp_path / f"c{i}.jsonl"
        corpus.write_text(_jsonl_line({"id": "ok", "text": "好的"}) + "\n" + _jsonl_line(doc) + "\n", encoding="utf-8")
        _refused(_cli("index", "build", corpus, "-o", tmp_path / f"idx{i}", "--model", TINY), f"c{i}.jsonl:2")
        assert not (tmp_path / f"idx{i}" / "CURRENT").exists()


@pytest.mark.parametrize("args,needle", [
    (["--filter", "topic=NaN"], "filter"), (["--filter", "topic=Infinity"], "filter"),
    (["--filter", "n=18446744073709551616"], "64-bit"), (["--filter", "topic=" + json.dumps(_deep(100))], "filter"),
    (["--filter", "topic=[1]"], "filter"), ([" \t"], "query"), ([""], "query")])
def test_cli_search_refuses_hostile_queries_and_filters(built, args, needle):
    query = [SEED.text] if args[0] == "--filter" else []
    _refused(_cli("search", built, *query, *args), needle)


def test_cli_search_with_invalid_utf8_in_argv_is_one_error_line(built):
    """argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    env = serve_env()
    r = subprocess.run([sys.executable.encode(), b"-m", b"embedkit.cli", b"search", str(built).encode(), b"\xed\xa0\x80"],
                       cwd=ROOT, env=env, capture_output=True, timeout=300)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("embedkit: error:")], err[-2000:]


# ------------------------------------------------------------------------------------------------
# (c) REST, one real server
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    with serving(built, tmp_path_factory.mktemp("hostile-log") / "server.log") as srv:
        yield srv


def _post(client, path: str, obj) -> httpx.Response:
    body = json.dumps(obj, ensure_ascii=True, allow_nan=True)  # NaN literals and \ud800 escapes as sent by hand
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


def _shape(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    return body["error"]["message"]


def test_rest_refuses_hostile_values_naming_the_field(server):
    outcome, added = {}, []
    with httpx.Client(base_url=server.url, timeout=120) as c:
        n0 = c.get("/info").json()["count"]
        for field in FIELDS:
            for name, value in HOSTILE.items():
                if field in ("id", "text", "metadata"):
                    doc = _doc_case(field, name, value)
                    r = _post(c, "/documents", {"documents": [doc]})
                elif field == "filter":
                    r = _post(c, "/search", {"query": SEED.text, "top_k": 3, "filter": {"topic": value}})
                else:
                    r = _post(c, "/search", {"query": value, "top_k": 3})
                if r.status_code in (200, 201):
                    outcome[(field, name)] = "ok"
                    if r.status_code == 201:
                        added.append(doc["id"])
                elif 400 <= r.status_code < 500:
                    msg = _shape(r)
                    named = field if field != "metadata" else "metadata"
                    ok = named in msg or r.status_code == 413
                    outcome[(field, name)] = "error" if ok else f"unclear {r.status_code}: {msg[:150]}"
                else:
                    outcome[(field, name)] = f"{r.status_code}: {r.text[:150]}"
        wrong = {k: v for k, v in outcome.items() if v != ("ok" if k[1] in ACCEPTED[("rest", k[0])] else "error")}
        assert not wrong, wrong
        for doc_id in added:  # accepted ones round-trip and delete
            assert c.get(f"/documents/{quote(doc_id, safe='')}").json()["id"] == doc_id
            assert c.delete(f"/documents/{quote(doc_id, safe='')}").status_code == 200
        # GET / DELETE /documents/{id} with hostile path segments: 404 (or 4xx) in the error shape
        for raw in ["%00", "%ED%A0%80", "%FF%FE", "%20%09", quote("x" * 4000), "..%2F..%2Fetc%2Fpasswd", "%25"]:
            for method in ("GET", "DELETE"):
                r = c.request(method, f"/documents/{raw}")
                assert 400 <= r.status_code < 500, (method, raw, r.status_code, r.text[:300])
                _shape(r)
        assert c.get("/info").json()["count"] == n0
        hits = c.post("/search", json={"query": SEED.text, "top_k": 1}).json()["results"][0]["hits"]
        assert hits[0]["id"] == SEED.id
        assert c.get("/documents/seed").json()["metadata"] == SEED.metadata
    log = server.log()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]


@pytest.mark.parametrize("body", [
    b'{"documents": [{"id": "a", "text": "x", "metadata": {"v": NaN}}]}',
    b'{"documents": [{"id": "a", "text": "x", "metadata": {"v": -Infinity}}]}',
    b'{"query": "x", "filter": {"topic": NaN}}', b'{"query": "x", "top_k": NaN}', b'{"query": "x", "top_k": 1e999}',
    b'{"query": "x", "min_score": Infinity}', b'{"query": "\\ud800"}', b'{"query": "x\\u0000", "top_k": 18446744073709551616}',
    b'{"documents": [{"id": "\\udfff", "text": "x"}]}', b'[' * 100 + b']' * 100, b'{"query": ' + b'[' * 5000 + b']' * 5000 + b'}',
    b'\xff\xfe{"query": "x"}', b'{"query": "x"', b'', b'null', b'"x"'])
def test_rest_raw_bodies_get_a_4xx_in_the_error_shape(server, body):
    r = httpx.post(server.url + "/search" if b"documents" not in body else server.url + "/documents", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert _shape(r)
    assert math.isfinite(len(r.content)) and "Traceback" not in server.log()
