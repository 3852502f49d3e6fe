"""Helpers for the REST service tests: run the real ``embedkit serve`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from .conftest import DEMO_CORPUS, ROOT

START_TIMEOUT_S = 180  # generous: CI machines are shared; nothing asserts on it


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_docs(every: int = 1):
    from embedkit.corpus import Doc

    docs = []
    with open(DEMO_CORPUS, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % every == 0:
                d = json.loads(line)
                docs.append(Doc(d["id"], d["text"], d.get("metadata")))
    return docs


def serve_env(**extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    env.pop("EMBEDKIT_API_KEY", None)
    env.update(extra)
    return env


def run_serve(args: list[str], *, env: dict | None = None, timeout: float = START_TIMEOUT_S):
    """Run ``embedkit serve ARGS`` to completion (for servers that must refuse to start)."""
    return subprocess.run([sys.executable, "-m", "embedkit.cli", "serve", *args], cwd=ROOT, env=env or serve_env(),
                          capture_output=True, text=True, timeout=timeout)


class Server:
    """``embedkit serve INDEX --port P ...`` as a subprocess; stderr goes to a log file."""

    def __init__(self, index_dir: Path, log_path: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        cmd = [sys.executable, "-m", "embedkit.cli", "serve", str(index_dir), "--host", "127.0.0.1",
               "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env or serve_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@contextmanager
def serving(index_dir: Path, log_path: Path, *args: str, env: dict | None = None):
    """A ready ``Server`` for the ``with`` block, stopped after it."""
    srv = Server(index_dir, log_path, *args, env=env)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def assert_error(resp: httpx.Response, status: int, type_: str | None = None, *contains: str) -> str:
    """The response is ``status`` with exactly ``{"error": {"type", "message"}}``; returns the message."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    msg = body["error"]["message"]
    assert isinstance(msg, str) and msg
    assert "Traceback" not in msg and 'File "' not in msg
    for c in contains:
        assert c in msg, (c, msg)
    return msg
