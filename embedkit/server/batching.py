"""Dynamic micro-batching: concurrent requests' texts are merged into one encoder call.

One consumer task owns the model. A request puts its texts in a bounded queue and awaits a future.
The consumer takes the oldest request, waits at most ``wait_ms`` (counted from when that request
arrived) for others to join (only while requests are concurrent: after a batch that merged several
or saw new ones arrive; a lone client is never delayed), then takes whole requests, oldest first, until the next one would push
the batch past ``max_batch`` texts or ``max_tokens`` estimated tokens (characters + 2 per text; one
token per character is right for Chinese BERT vocabularies and an over-estimate elsewhere), so a few
long texts do not share a padded batch with dozens of others (a request over either bound runs alone;
the encoder splits it). The model runs in a single worker thread, never on the event loop; while it runs, new
requests queue up and form the next batch, so under load the batches fill by themselves.

A request whose client goes away while it waits (its ``submit`` is cancelled) leaves the queue at
once: its texts cost no encoder time (``on_abandon`` counts them).

``fn`` returns the rows, or ``(rows, tokens)`` with the tokens read per text; ``submit(...,
with_tokens=True)`` then returns ``(rows, tokens)`` for that request's texts.

With ``merge=False`` every request is its own encoder call (batching off) through the same queue,
worker thread and limits: the only difference between the two modes is the merging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("embedkit.server.batching")

EncodeFn = Callable[[list[str]], "np.ndarray | tuple[np.ndarray, np.ndarray]"]
BatchHook = Callable[[int, int, float], None]  # (texts, requests, seconds) after each encoder call
AbandonHook = Callable[[int], None]  # texts dropped from the queue because their client went away


class QueueFullError(Exception):
    """The bounded queue cannot take this request now (the client should retry later)."""

    def __init__(self, queued: int, requested: int, limit: int):
        self.queued, self.requested, self.limit = queued, requested, limit
        super().__init__(f"the encoder queue is full ({queued} texts waiting, this request adds {requested}, "
                         f"limit {limit}); retry later")


class BatcherClosedError(Exception):
    """The batcher is not running (the server is starting up or shutting down)."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    with_tokens: bool = False
    arrived: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return sum(len(t) for t in self.texts) + 2 * len(self.texts)


class MicroBatcher:
    def __init__(self, fn: EncodeFn, *, max_batch: int = 64, wait_ms: float = 2.0, max_queue: int = 2048,
                 merge: bool = True, max_tokens: int | None = None, on_batch: BatchHook | None = None,
                 on_abandon: AbandonHook | None = None):
        if max_batch <= 0 or max_queue <= 0 or wait_ms < 0 or (max_tokens is not None and max_tokens <= 0):
            raise ValueError(f"max_batch, max_queue and max_tokens must be positive and wait_ms >= 0, got "
                             f"{max_batch}, {max_queue}, {max_tokens}, {wait_ms}")
        self.fn = fn
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.max_queue = max_queue
        self.merge = merge
        self.max_tokens = max_tokens
        self.on_batch = on_batch
        self.on_abandon = on_abandon
        self._pending: deque[_Item] = deque()
        self._queued = 0  # texts waiting (not yet in a running encoder call)
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: list[_Item] = []
        self._busy = False  # did the last batch see concurrent requests?

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedkit-encoder")
        self._task = asyncio.create_task(self._run(), name="embedkit-batcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        inflight = list(self._inflight)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        leftovers = inflight + list(self._pending)
        self._pending.clear()
        self._inflight = []
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(BatcherClosedError("the server is shutting down"))
        self._queued = 0
        executor, self._executor = self._executor, None
        if executor is not None:  # let a running encoder call finish, without blocking the event loop
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    @property
    def queue_depth(self) -> int:
        """Texts waiting for the encoder."""
        return self._queued

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the request side -----------------------------------------------------------------------
    async def submit(self, texts: Sequence[str], *, with_tokens: bool = False):
        """Encode ``texts`` (a non-empty list) in some batch; returns their rows, in order (with
        ``with_tokens``: ``(rows, tokens per text)``)."""
        texts = list(texts)
        if not texts:
            raise ValueError("submit() needs at least one text")
        if not self.running:
            raise BatcherClosedError("the encoder is not running")
        if self._queued + len(texts) > self.max_queue:
            raise QueueFullError(self._queued, len(texts), self.max_queue)
        item = _Item(texts, asyncio.get_running_loop().create_future(), with_tokens)
        self._pending.append(item)
        self._queued += len(texts)
        self._wakeup.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            # Client gone (or server stopping): a request that has not reached the encoder leaves the
            # queue now and costs no encoder time.
            self._forget(item)
            raise

    def _forget(self, item: _Item) -> None:
        try:
            self._pending.remove(item)
        except ValueError:
            return  # already taken into a batch (or dropped by _take)
        self._queued -= len(item.texts)
        self._abandoned(len(item.texts))

    def _abandoned(self, n: int) -> None:
        if self.on_abandon is not None:
            try:
                self.on_abandon(n)
            except Exception:  # pragma: no cover - metrics never break serving
                log.exception("abandon hook failed")

    # -- the consumer ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.merge and self.wait_s > 0 and self._busy:
                await self._wait_for_company()
            batch = self._take()
            if not batch:
                continue
            self._inflight = batch
            try:
                await self._encode(loop, batch)
            except Exception as e:
                log.exception("encoder batch failed unexpectedly")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
            finally:
                self._inflight = []
            # Wait for company only where there is some: after a batch that merged requests or saw new
            # ones arrive while it ran. A lone client never pays the window (nor the timer's wake-up
            # latency, which on a busy machine is larger than the window).
            self._busy = len(batch) > 1 or bool(self._pending)

    async def _encode(self, loop, batch: list[_Item]) -> None:
        texts = [t for it in batch for t in it.texts]
        t0 = time.perf_counter()
        try:
            out = await loop.run_in_executor(self._executor, self.fn, texts)
        except Exception as e:  # noqa: BLE001 - delivered to the waiting requests
            await self._fail_or_retry(loop, batch, e)
            return
        finally:
            if self.on_batch is not None:
                try:
                    self.on_batch(len(texts), len(batch), time.perf_counter() - t0)
                except Exception:  # pragma: no cover - metrics never break serving
                    log.exception("batch hook failed")
        self._deliver(batch, out)

    async def _wait_for_company(self) -> None:
        """Wait until the oldest request has waited wait_s, or a full batch is queued."""
        deadline = self._pending[0].arrived + self.wait_s
        while self._queued < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        n = tokens = 0
        budget = self.max_tokens
        while self._pending:
            item = self._pending[0]
            if item.future.done():  # cancelled while waiting
                self._pending.popleft()
                self._queued -= len(item.texts)
                self._abandoned(len(item.texts))
                continue
            if batch and (not self.merge or n + len(item.texts) > self.max_batch
                          or (budget is not None and tokens + item.tokens > budget)):
                break
            self._pending.popleft()
            self._queued -= len(item.texts)
            batch.append(item)
            n += len(item.texts)
            tokens += item.tokens
            if not self.merge:
                break
        return batch

    def _deliver(self, batch: list[_Item], out) -> None:
        out, tokens = _split_result(out)
        if out.ndim != 2 or out.shape[0] != sum(len(it.texts) for it in batch):
            raise RuntimeError(f"the encoder returned shape {out.shape} for "
                               f"{sum(len(it.texts) for it in batch)} texts")
        start = 0
        for it in batch:
            end = start + len(it.texts)
            if not it.future.done():
                it.future.set_result(_result(it, out[start:end], None if tokens is None else tokens[start:end]))
            start = end

    async def _fail_or_retry(self, loop, batch: list[_Item], error: Exception) -> None:
        """One request's bad input must not fail its batch-mates: retry each request on its own."""
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_exception(error)
            return
        for it in batch:
            if it.future.done():
                continue
            try:
                rows = await loop.run_in_executor(self._executor, self.fn, it.texts)
            except Exception as e:  # noqa: BLE001
                if not it.future.done():
                    it.future.set_exception(e)
            else:
                if not it.future.done():
                    it.future.set_result(_result(it, *_split_result(rows)))


def _split_result(out) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(out, tuple):
        rows, tokens = out
        return np.asarray(rows), np.asarray(tokens)
    return np.asarray(out), None


def _result(item: _Item, rows: np.ndarray, tokens: np.ndarray | None):
    if not item.with_tokens:
        return rows
    if tokens is None:
        raise RuntimeError("the encoder function returned no token counts")
    return rows, tokens
