"""The API keeps the contract it publishes: schemathesis (all checks, a bounded number of examples)
against the real ``embedkit serve`` on 127.0.0.1 must find nothing.

schemathesis runs from its own virtual environment, made by scripts/schemathesis.sh (it is never an
embedkit dependency). The server uses the tiny model and small limits so that hundreds of generated
requests stay cheap; every rule it enforces is the same whatever the model.
"""

from __future__ import annotations

import subprocess

import pytest

from ._api_util import Server, demo_docs
from .conftest import ROOT

pytestmark = pytest.mark.slow

EXAMPLES = 30  # per operation and phase; bounded so the run takes well under a minute of server time


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_encoder):
    from embedkit.index import EmbedIndex

    d = tmp_path_factory.mktemp("st") / "idx"
    EmbedIndex.build(d, demo_docs(every=10), encoder=tiny_encoder, index="flat")
    srv = Server(d, tmp_path_factory.mktemp("st-log") / "server.log", "--max-texts", "8", "--max-chars", "64",
                 "--max-top-k", "20")
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_schemathesis_finds_no_failures(server, tmp_path):
    r = subprocess.run(["bash", str(ROOT / "scripts" / "schemathesis.sh"), server.url], cwd=tmp_path,
                       env={**_env(), "EMBEDKIT_SCHEMATHESIS_EXAMPLES": str(EXAMPLES)}, capture_output=True,
                       text=True, timeout=1800, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "No issues found" in out and "Operations:       11 selected / 11 total" in out, out[-3000:]
    assert server.alive()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


def _env() -> dict:
    import os

    return dict(os.environ)
