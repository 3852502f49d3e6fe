"""Regression tests for issue 19, defect 12 (the rest), against a real ``embedkit serve`` process:
request heads are capped in size (431/414) and in time (408 or closed), a malformed head gets the
error shape instead of uvicorn's plain-text 400, and SIGTERM with more queued work than the grace
period answers 503 + Retry-After, not 500 with CancelledError tracebacks."""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ._api_util import Server, demo_docs, serving

pytestmark = pytest.mark.slow

HEAD_CAP = 64 * 1024


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, m3e_encoder):
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("limits") / "idx"
    EmbedIndex.build(d, demo_docs(every=12), encoder=m3e_encoder, index="flat")
    return d


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    with serving(index_dir, tmp_path_factory.mktemp("limits-log") / "server.log", "--backend", "torch") as srv:
        yield srv


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status", encoding="ascii"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _reply(s: socket.socket, timeout: float = 20) -> bytes:
    """Everything the server sends until it closes (b"" or a partial reply when it resets)."""
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _error_shape(reply: bytes, status: int) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), reply[:300]
    assert b"content-type: application/json" in head.lower(), head
    err = json.loads(body)
    assert set(err) == {"error"} and set(err["error"]) == {"type", "message"}, err
    return err["error"]


def _healthy(server) -> None:
    r = httpx.post(server.url + "/search", json={"query": "信用卡", "top_k": 1}, timeout=60)
    assert r.status_code == 200, r.text


def _flood(port: int, total: int) -> bytes:
    """A request line, then ``total`` bytes of one never-ending header; the reply (or b"" when closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        chunk = b"a" * 65536
        try:
            for _ in range(total // len(chunk)):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-stream: what the test wants
        return _reply(s)


def test_huge_headers_are_refused_without_growing_the_server(server):
    _healthy(server)
    before = _rss_kb(server.proc.pid)
    with ThreadPoolExecutor(8) as ex:  # 8 clients, each trying to send 40 MB of headers
        replies = list(ex.map(lambda _: _flood(server.port, 40 << 20), range(8)))
    for reply in replies:  # 431 in the error shape, or closed (a reset may overtake the answer)
        if reply:
            assert _error_shape(reply, 431)["type"] == "headers_too_large"
    grown_mb = (_rss_kb(server.proc.pid) - before) / 1024
    assert grown_mb < 64, f"the server grew by {grown_mb:.0f} MB"
    # Just over the cap, sent at once and then read: the 431 arrives.
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (HEAD_CAP + 10) + b"\r\n\r\n")
        reply = _reply(s)
    if reply:
        assert "65536 bytes" in _error_shape(reply, 431)["message"]
    # Many headers just under the cap are fine.
    headers = {f"x-h{i}": "v" * 200 for i in range(200)}  # ~42 KB
    assert httpx.get(server.url + "/health", headers=headers, timeout=30).status_code == 200
    _healthy(server)
    assert server.alive() and "Traceback" not in server.log()


def test_an_over_long_url_is_414_in_the_error_shape(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"GET /documents/" + b"x" * (HEAD_CAP + 100) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _reply(s)
    if reply:
        assert _error_shape(reply, 414)["type"] == "uri_too_long"
    long_ok = httpx.get(server.url + "/documents/" + "x" * 8000, timeout=30)  # long but under the cap: routed
    assert long_ok.status_code == 404 and set(long_ok.json()) == {"error"}
    _healthy(server)


@pytest.mark.parametrize("header", [b"Content-Length: abc", b"Content-Length: -5", b"Content-Length: 1x",
                                    b"Content-Length: 5\r\nContent-Length: 7"])
def test_an_invalid_content_length_gets_the_error_shape(server, header):
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + header
                  + b"\r\n\r\n{\"query\": \"x\"}")
        reply = _reply(s)
    err = _error_shape(reply, 400)
    assert err["type"] == "bad_request" and "HTTP" in err["message"]
    _healthy(server)


def test_unfinished_headers_are_dropped_after_the_timeout(server):
    t0 = time.monotonic()
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        stalled.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):  # the server keeps serving others meanwhile
            _healthy(server)
            time.sleep(1)
        reply = _reply(stalled, timeout=30)
        waited = time.monotonic() - t0
        assert 8 < waited < 25, waited
        if reply:
            assert _error_shape(reply, 408)["type"] == "request_timeout"
        assert _reply(silent, timeout=30) == b""  # never sent a byte: closed without an answer
    finally:
        stalled.close()
        silent.close()
    _healthy(server)
    assert "Traceback" not in server.log()


def test_sigterm_with_queued_work_answers_503_not_500(index_dir, tmp_path):
    """More encoder work queued than the 10 s grace period: every request gets 200 or 503 + Retry-After."""
    srv = Server(index_dir, tmp_path / "server.log", "--backend", "torch", "--max-texts", "64",
                 "--max-chars", "2000", "--max-batch", "16", "--max-queue", "100000").wait_ready()
    text = "信用卡额度太低，能不能申请提高额度？快递一直没有送到怎么办。" * 16  # ~500 characters
    results: list = []
    t0 = time.perf_counter()  # one request's encoder time here, to queue about 30 s of work on any machine
    assert httpx.post(srv.url + "/encode", json={"texts": [text] * 64}, timeout=120).status_code == 200
    n = min(200, max(24, int(30 / (time.perf_counter() - t0))))

    def one(i):
        try:
            r = httpx.post(srv.url + "/encode", json={"texts": [f"{i} {text}"] * 64}, timeout=120)
            results.append((r.status_code, r.headers.get("retry-after"), r.text[:300]))
        except httpx.HTTPError as e:
            results.append((None, None, repr(e)))

    try:
        with ThreadPoolExecutor(n) as ex:
            futures = [ex.submit(one, i) for i in range(n)]
            time.sleep(3)  # all queued or encoding
            srv.proc.send_signal(signal.SIGTERM)
            for f in futures:
                f.result()
        srv.proc.wait(timeout=60)
    finally:
        srv.stop()
    log = srv.log_path.read_text(encoding="utf-8", errors="replace")
    statuses = [s for s, _, _ in results]
    assert all(s in (200, 503) for s in statuses), results
    assert 503 in statuses, "the work finished within the grace period: the test did not test shutdown"
    for status, retry_after, body in results:
        if status == 503:
            assert retry_after and int(retry_after) >= 1, body
            assert json.loads(body)["error"]["type"] == "unavailable", body
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
