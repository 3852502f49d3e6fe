"""Unit tests of the service's parts: the micro-batcher (fake encoder functions), settings, the error
mapping, and the app in-process (faults that cannot be provoked from outside a healthy server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import numpy as np
import pytest

from embedkit.errors import IndexFormatError, InputError
from embedkit.server.batching import BatcherClosedError, MicroBatcher, QueueFullError
from embedkit.server.settings import Settings

from .conftest import ROOT


class BlockingFn:
    """Fake encoder: row i is [hash of text i]; blocks while ``gate`` is closed; records every call."""

    def __init__(self, dim: int = 4, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.dim = dim
        self.fail_on = fail_on

    def __call__(self, texts):
        self.calls.append(list(texts))
        self.entered.set()
        self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in texts:
            raise InputError(f"cannot encode {self.fail_on!r}")
        return np.array([[float(len(t)), float(sum(map(ord, t)) % 997)] + [0.0] * (self.dim - 2) for t in texts],
                        dtype=np.float32)


def expected(texts, dim=4):
    return BlockingFn(dim)(texts)


async def _hold_first_batch(b: MicroBatcher, fn: BlockingFn):
    """Start a one-text batch and keep the encoder busy with it; returns its task."""
    fn.gate.clear()
    first = asyncio.create_task(b.submit(["first"]))
    while not fn.entered.is_set():
        await asyncio.sleep(0.001)
    return first


def run(coro):
    return asyncio.run(coro)


def test_requests_queued_behind_a_running_batch_are_merged_in_order():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=64, wait_ms=1, max_queue=100)
        await b.start()
        first = await _hold_first_batch(b, fn)
        texts = [[f"q{i}"] * (i % 3 + 1) for i in range(5)]
        tasks = [asyncio.create_task(b.submit(t)) for t in texts]
        await asyncio.sleep(0.01)
        assert b.queue_depth == sum(map(len, texts))
        fn.gate.set()
        results = await asyncio.gather(first, *tasks)
        await b.stop()
        return fn, texts, results

    fn, texts, results = run(main())
    assert [len(c) for c in fn.calls] == [1, sum(map(len, texts))]  # one call for all five waiting requests
    for t, r in zip(texts, results[1:]):
        np.testing.assert_array_equal(r, expected(t))


def test_max_batch_takes_whole_requests_oldest_first():
    async def main(max_batch):
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=max_batch, wait_ms=0, max_queue=100)
        await b.start()
        first = await _hold_first_batch(b, fn)
        tasks = [asyncio.create_task(b.submit([f"r{i}"] * 3)) for i in range(3)]
        big = asyncio.create_task(b.submit(["big"] * 10))  # larger than max_batch: runs alone
        await asyncio.sleep(0.01)
        fn.gate.set()
        await asyncio.gather(first, *tasks, big)
        await b.stop()
        return [len(c) for c in fn.calls]

    assert run(main(5)) == [1, 3, 3, 3, 10]
    assert run(main(6)) == [1, 6, 3, 10]


def test_wait_window_gathers_requests_that_arrive_together():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=8, wait_ms=200, max_queue=100)
        await b.start()
        outs = await asyncio.gather(*(b.submit([f"t{i}"]) for i in range(8)))
        # under concurrency, a request waits (up to wait_ms) for a late companion
        first = asyncio.create_task(b.submit(["early"]))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(b.submit(["late"]))
        await asyncio.gather(first, second)
        await b.stop()
        return fn, outs

    fn, outs = run(main())
    assert [len(c) for c in fn.calls] == [8, 2]  # a full batch does not wait out the window
    assert all(o.shape == (1, 4) for o in outs)


def test_a_lone_client_does_not_wait_for_the_window():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=8, wait_ms=60_000, max_queue=100)
        await b.start()
        for i in range(3):  # one at a time: never concurrent, so never held back for a minute
            await asyncio.wait_for(b.submit([f"alone {i}"]), timeout=30)
        await b.stop()
        return fn.calls

    assert run(main()) == [["alone 0"], ["alone 1"], ["alone 2"]]


def test_batching_off_runs_every_request_alone():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=64, wait_ms=5, max_queue=100, merge=False)
        await b.start()
        first = await _hold_first_batch(b, fn)
        tasks = [asyncio.create_task(b.submit([f"q{i}", "x"])) for i in range(4)]
        await asyncio.sleep(0.01)
        fn.gate.set()
        await asyncio.gather(first, *tasks)
        await b.stop()
        return [len(c) for c in fn.calls]

    assert run(main()) == [1, 2, 2, 2, 2]


def test_full_queue_refuses_instead_of_growing():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=64, wait_ms=0, max_queue=4)
        await b.start()
        first = await _hold_first_batch(b, fn)  # running: not counted as waiting
        queued = asyncio.create_task(b.submit(["a", "b", "c", "d"]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError) as e:
            await b.submit(["e"])
        assert "limit 4" in str(e.value)
        fn.gate.set()
        await asyncio.gather(first, queued)
        assert b.queue_depth == 0
        await b.submit(["e"])  # room again
        await b.stop()

    run(main())


def test_cancelled_requests_cost_no_encoder_time():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=64, wait_ms=0, max_queue=100)
        await b.start()
        first = await _hold_first_batch(b, fn)
        gone = asyncio.create_task(b.submit(["abandoned"]))
        kept = asyncio.create_task(b.submit(["kept"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        fn.gate.set()
        await asyncio.gather(first, kept)
        await b.stop()
        return fn.calls

    calls = run(main())
    assert calls == [["first"], ["kept"]]


def test_a_cancelled_request_leaves_the_queue_at_once_and_is_counted():
    async def main():
        fn = BlockingFn()
        dropped: list[int] = []
        b = MicroBatcher(fn, max_batch=64, wait_ms=0, max_queue=100, on_abandon=dropped.append)
        await b.start()
        first = await _hold_first_batch(b, fn)
        gone = asyncio.create_task(b.submit(["x", "y", "z"]))
        await asyncio.sleep(0.01)
        assert b.queue_depth == 3
        gone.cancel()
        await asyncio.sleep(0)
        depth = b.queue_depth  # before the encoder is free again
        fn.gate.set()
        await first
        await b.stop()
        return depth, dropped, fn.calls

    depth, dropped, calls = run(main())
    assert depth == 0 and dropped == [3] and calls == [["first"]]


def test_token_budget_splits_batches_of_long_texts():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=64, wait_ms=0, max_queue=1000, max_tokens=100)
        await b.start()
        first = await _hold_first_batch(b, fn)
        # estimated tokens per text: characters + 2
        tasks = [asyncio.create_task(b.submit(["长" * 38])) for _ in range(5)]  # 40 each: two fit in 100
        short = [asyncio.create_task(b.submit(["短" * 8])) for _ in range(10)]  # 10 each: ten fit
        await asyncio.sleep(0.01)
        fn.gate.set()
        await asyncio.gather(first, *tasks, *short)
        await b.stop()
        return [len(c) for c in fn.calls]

    assert run(main()) == [1, 2, 2, 7, 4]  # 40+40 | 40+40 | 40+6x10 = 100 | 4x10


def test_token_counts_travel_with_each_requests_rows():
    def fn(texts):
        rows = np.array([[float(len(t))] for t in texts], dtype=np.float32)
        return rows, np.array([len(t) + 2 for t in texts])

    async def main():
        b = MicroBatcher(fn, max_batch=64, wait_ms=50, max_queue=100)
        await b.start()
        both, plain = await asyncio.gather(b.submit(["ab", "abcd"], with_tokens=True), b.submit(["abc"]))
        await b.stop()
        return both, plain

    (rows, tokens), plain = run(main())
    np.testing.assert_array_equal(rows[:, 0], [2, 4])
    assert tokens.tolist() == [4, 6] and plain[:, 0].tolist() == [3]


def test_one_bad_request_does_not_fail_its_batch_mates():
    async def main():
        fn = BlockingFn(fail_on="bad")
        b = MicroBatcher(fn, max_batch=64, wait_ms=0, max_queue=100)
        await b.start()
        first = await _hold_first_batch(b, fn)
        good = asyncio.create_task(b.submit(["good"]))
        bad = asyncio.create_task(b.submit(["bad"]))
        await asyncio.sleep(0.01)
        fn.gate.set()
        await first
        ok = await good
        with pytest.raises(InputError):
            await bad
        await b.stop()
        return ok

    np.testing.assert_array_equal(run(main()), expected(["good"]))


def test_stop_fails_waiting_requests_and_refuses_new_ones():
    async def main():
        fn = BlockingFn()
        b = MicroBatcher(fn, max_batch=64, wait_ms=0, max_queue=100)
        await b.start()
        first = await _hold_first_batch(b, fn)
        waiting = asyncio.create_task(b.submit(["w"]))
        await asyncio.sleep(0.01)
        stopper = asyncio.create_task(b.stop())
        await asyncio.sleep(0.01)
        fn.gate.set()
        await stopper
        for t in (first, waiting):
            with pytest.raises(BatcherClosedError):
                await t
        with pytest.raises(BatcherClosedError):
            await b.submit(["late"])

    run(main())


# ------------------------------------------------------------------------------------------------
# settings and CLI
# ------------------------------------------------------------------------------------------------
def test_settings_validate_and_hide_the_key(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="max_queue"):
        Settings(tmp_path, max_texts=100, max_queue=10)
    with pytest.raises(InputError, match="max_batch must be a positive integer, got 0"):
        Settings(tmp_path, max_batch=0)
    with pytest.raises(InputError, match="port"):
        Settings(tmp_path, port=70000)
    monkeypatch.setenv("EMBEDKIT_API_KEY", "k1")
    s = Settings.from_env(tmp_path)
    assert s.api_key == "k1" and "k1" not in repr(s) and "api_key" not in s.public() and s.public()["auth"]
    assert Settings(tmp_path, api_key="").api_key is None  # no key given
    for bad, why in (("  ", "only whitespace"), (" k1 ", "leading or trailing"), ("clé", "U\\+00E9"),
                     ("a b", "U\\+0020")):
        with pytest.raises(InputError, match=why):  # issue 19: refused at start, never a silent auth change
            Settings(tmp_path, api_key=bad)


def test_settings_travel_through_the_environment(tmp_path):
    s = Settings(tmp_path, api_key="sekret", max_texts=7, workers=3, encoder_threads=1, batch_wait_ms=0.5)
    env = s.to_env()
    assert "sekret" not in env["EMBEDKIT_SERVER_SETTINGS"] and env["EMBEDKIT_API_KEY"] == "sekret"
    assert Settings.from_env(environ=env) == s and s.read_only
    assert Settings.from_env(environ={"EMBEDKIT_INDEX": str(tmp_path)}) == Settings(tmp_path)
    with pytest.raises(InputError, match="EMBEDKIT_INDEX"):
        Settings.from_env(environ={})
    with pytest.raises(InputError, match="bogus"):
        Settings.from_env(environ={"EMBEDKIT_SERVER_SETTINGS": '{"index_dir": "x", "bogus": 1}'})


def test_cli_help_imports_no_heavy_libraries():
    code = ("import sys\nfrom embedkit.cli import main\n"
            "for argv in (['--help'], ['serve', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'faiss', 'fastapi', 'uvicorn') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--max-batch" in r.stdout and "--no-batching" in r.stdout and "EMBEDKIT_API_KEY" in r.stdout
    assert "HEAVY []" in r.stdout


# ------------------------------------------------------------------------------------------------
# the app in-process
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_app_index(tmp_path_factory, tiny_encoder):
    from embedkit.index import EmbedIndex

    from ._api_util import demo_docs

    d = tmp_path_factory.mktemp("api-unit") / "idx"
    EmbedIndex.build(d, demo_docs(every=20), encoder=tiny_encoder, index="flat")
    return EmbedIndex.load(d, encoder=tiny_encoder)


def test_internal_errors_never_leak_details(tiny_app_index, monkeypatch):
    from fastapi.testclient import TestClient

    from embedkit.server import create_app

    app = create_app(Settings(tiny_app_index.directory), index=tiny_app_index)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/search", json={"query": "信用卡"}).status_code == 200

        def boom(*a, **k):
            raise RuntimeError("secret detail in /srv/private/path.py line 12")

        monkeypatch.setattr(tiny_app_index, "search_vectors", boom)
        r = c.post("/search", json={"query": "信用卡"})
        assert r.status_code == 500
        assert r.json() == {"error": {"type": "internal_error",
                                      "message": "internal server error (details are in the server log)"}}
        assert "secret" not in r.text
        monkeypatch.undo()
        assert c.post("/search", json={"query": "信用卡"}).status_code == 200
        metrics = c.get("/metrics").text
        assert 'endpoint="/search",method="POST",status="500"' in metrics


def test_two_apps_do_not_share_state(tiny_app_index):
    from fastapi.testclient import TestClient

    from embedkit.server import create_app

    a = create_app(Settings(tiny_app_index.directory), index=tiny_app_index)
    b = create_app(Settings(tiny_app_index.directory, max_top_k=5), index=tiny_app_index)
    with TestClient(a) as ca, TestClient(b) as cb:
        ca.post("/search", json={"query": "x", "top_k": 10})
        assert cb.post("/search", json={"query": "x", "top_k": 10}).status_code == 422
        assert 'status="200"' in ca.get("/metrics").text and 'status="200"' not in cb.get("/metrics").text


def test_a_server_with_several_workers_is_read_only(tiny_app_index):
    from fastapi.testclient import TestClient

    from embedkit.server import create_app

    app = create_app(Settings(tiny_app_index.directory, workers=2), index=tiny_app_index)
    n = len(tiny_app_index)
    with TestClient(app) as c:
        r = c.post("/documents", json={"documents": [{"id": "ro-1", "text": "只读"}]})
        assert r.status_code == 403 and r.json()["error"]["type"] == "read_only" and "--workers 1" in r.text
        assert c.delete("/documents/x").status_code == 403
        assert c.post("/search", json={"query": "只读"}).status_code == 200
        assert c.get("/info").json()["settings"]["read_only"] is True
    assert len(tiny_app_index) == n


def test_health_is_503_until_the_index_is_loaded(tiny_app_index):
    from fastapi.testclient import TestClient

    from embedkit.server import create_app

    app = create_app(Settings(tiny_app_index.directory), index=tiny_app_index)
    c = TestClient(app)  # no context manager: the lifespan has not run
    r = c.get("/health")
    assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"
    assert c.post("/search", json={"query": "x"}).status_code == 503


def test_lifespan_reports_an_unloadable_index_in_one_line(tiny_app_index, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from embedkit.index import current_generation
    from embedkit.server import create_app

    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_app_index.directory, bad)
    (current_generation(bad) / "index.faiss").write_bytes(b"not a faiss index")
    app = create_app(Settings(bad))
    with pytest.raises(IndexFormatError), TestClient(app):
        pass
    msg = app.state.startup_error
    assert msg.startswith(f"cannot serve index {str(bad)!r}: FAISS file") and "corrupt" in msg
    assert app.state.service is None


@pytest.mark.parametrize("freeze", [True, False])
def test_loaded_model_objects_are_frozen_out_of_the_collector_while_serving(tiny_app_index, freeze):
    import gc

    from fastapi.testclient import TestClient

    from embedkit.server import create_app

    assert gc.get_freeze_count() == 0
    app = create_app(Settings(tiny_app_index.directory, freeze_gc=freeze), index=tiny_app_index)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert (gc.get_freeze_count() > 0) is freeze
        assert c.get("/info").json()["settings"]["freeze_gc"] is freeze
    assert gc.get_freeze_count() == 0  # unfrozen at shutdown
