"""A lean closed-loop HTTP/1.1 load generator for the serving benchmark.

Each client holds one keep-alive connection (plain asyncio streams) and sends its next POST as soon
as the previous answer is read in full. No HTTP client library: on a 2-core machine that the load
generator shares with the server under test, httpx's own CPU (about 5 ms a request) made the clients,
not the servers, the bottleneck at 32 clients. Both servers are measured through this same code.

A response counts as a success when its status is 200 and ``check(body_bytes)`` is true; anything
else (status, timeout, broken connection) counts as an error by kind, and the connection is reopened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson


class _Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:  # the server closes the connection after the body
            data = await self.reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data


async def closed_loop(url: str, clients: int, seconds: float, make_body: Callable[[random.Random], dict],
                      check: Callable[[bytes], bool], *, path: str = "/v1/embeddings", timeout: float = 60.0,
                      seed: int = 0) -> dict:
    """Run ``clients`` closed-loop clients for ``seconds``; returns the latencies of the successful
    requests (seconds), the errors by kind and the elapsed time."""
    parts = urlsplit(url)
    lat: list[float] = []
    errors: dict[str, int] = {}
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        conn = _Conn(parts.hostname, parts.port)
        try:
            while time.perf_counter() < deadline:
                body = orjson.dumps(make_body(rng))
                s = time.perf_counter()
                try:
                    status, data = await asyncio.wait_for(conn.post(path, body), timeout)
                    key = str(status)
                    ok = status == 200 and check(data)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                        ValueError) as e:
                    ok, key = False, type(e).__name__
                    conn.close()
                if ok:
                    lat.append(time.perf_counter() - s)
                else:
                    errors[key] = errors.get(key, 0) + 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(w) for w in range(clients)))
    return {"latencies": lat, "errors": errors, "seconds": time.perf_counter() - t0}
