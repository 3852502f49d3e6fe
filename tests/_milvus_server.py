"""A real standalone Milvus 2.3.5 server as an OS process, for the tests of the Milvus store.

The server comes from the ``milvus`` package on PyPI, installed by scripts/setup.sh (through
scripts/milvus_server.sh) into its own virtual environment, ``.venv-milvus``, never embedkit's; it is
launched by scripts/milvus_standalone.py on a free 127.0.0.1 port over a temporary data directory.

It takes seconds to answer (tens on a cold, busy machine), so :func:`pytest_collection_finish` starts
each server that a collected test asks for (fixtures :data:`FIXTURES`) as soon as collection ends: it
comes up while the tests before them run, and the fixtures only wait for it. A missing server venv
makes those tests fail with the command to run, never skip. Every server is stopped, and its data
directory removed, when its fixture ends or, at the latest, when the session does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EMBEDKIT_MILVUS_VENV", ROOT / ".venv-milvus"))
LAUNCHER = ROOT / "scripts" / "milvus_standalone.py"
READY_TIMEOUT_S = 240
FIXTURES = ("milvus_server", "milvus_crash_server")  # one server process each


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusServer:
    """One server: ``start`` (again after ``kill``: same port, same data), ``wait_ready``, ``kill``, ``stop``."""

    def __init__(self, name: str):
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"embedkit-{name}-"))
        self.data = self.home / "milvus"
        self.log = self.home / "server.log"
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MilvusServer":
        python = VENV / "bin" / "python"
        if not python.exists():
            pytest.fail(f"the Milvus server's virtual environment {VENV} is missing: run scripts/setup.sh "
                        "(it installs milvus==2.3.5 there through scripts/milvus_server.sh)", pytrace=False)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(python), str(LAUNCHER), "--data", str(self.data), "--port", str(self.port),
                                          "--die-with-parent"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "MilvusServer":
        """Until /healthz says OK and the gRPC port answers a real call."""
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        while not (self._healthy() and self._answers()):
            if self.proc.poll() is not None:
                pytest.fail(f"the Milvus server exited with status {self.proc.returncode}:\n{self.log_tail()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"the Milvus server did not answer within {timeout:.0f} s:\n{self.log_tail()}",
                            pytrace=False)
            time.sleep(0.2)
        return self

    def _healthy(self) -> bool:
        try:
            port = json.loads((self.data / "configs" / "ports.json").read_text())["metrics_port"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return b"OK" in r.read()
        except (OSError, ValueError, KeyError):
            return False

    def _answers(self) -> bool:
        from pymilvus import MilvusClient

        try:
            MilvusClient(uri=self.uri, timeout=2).list_collections()
            return True
        except Exception:
            return False

    def kill(self) -> None:
        """``kill -9`` (the launcher execs the server: this pid is the server's)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """At the end: its data is thrown away, so no graceful shutdown (that takes Milvus ~20 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


_servers: dict[str, MilvusServer] = {}


def _server(name: str) -> MilvusServer:
    if name not in _servers:
        srv = _servers[name] = MilvusServer(name)
        if (VENV / "bin" / "python").exists():
            srv.start()
    return _servers[name]


def pytest_collection_finish(session) -> None:
    """Start the servers that the collected tests need now, so that they start while other tests run."""
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return  # (an xdist worker collects every test but runs few: its fixtures start what it needs)
    wanted = {f for item in session.items for f in getattr(item, "fixturenames", ()) if f in FIXTURES}
    for name in sorted(wanted):
        _server(name)


def pytest_sessionfinish(session) -> None:
    while _servers:
        _servers.popitem()[1].remove()


def _serve(name: str):
    try:
        yield _server(name).wait_ready()
    finally:
        srv = _servers.pop(name, None)
        if srv is not None:
            srv.remove()


@pytest.fixture(scope="session")
def milvus_server():
    """A running server shared by the session's tests (give each build its own collection)."""
    yield from _serve("milvus_server")


@pytest.fixture(scope="module")
def milvus_crash_server():
    """A server of its own for a test that kills and restarts it."""
    yield from _serve("milvus_crash_server")
