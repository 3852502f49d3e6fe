"""What the endpoints do, apart from HTTP: embedding, search and document changes over one index.

The encoder runs only in the batcher's worker thread (token counts come from there too, never from
another thread sharing the tokenizer); searches and index writes run in the default thread pool.
Responses are serialised once, by orjson straight from the float32 arrays (no per-float Python
objects, no response-model validation).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson

from embedkit.corpus import Doc
from embedkit.encoder import l2_normalize
from embedkit.errors import IndexRebuiltError, InputError

from .batching import MicroBatcher
from .errors import ApiError
from .metrics import Metrics
from .settings import Settings

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
INLINE_FLOATS = 1 << 16  # responses up to this many floats are serialised on the event loop (< 1 ms)


def dumps(obj) -> bytes:
    try:
        return orjson.dumps(obj, option=_NUMPY)
    except TypeError:  # e.g. metadata holding an integer beyond 64 bits, which orjson does not write
        return json.dumps(obj, ensure_ascii=False, default=_plain).encode()


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot serialise {type(o).__name__}")


class QueryPathAdapter:
    """The index's query path in two halves: ``encode_raw`` (batched, encoder thread) and ``project``.

    Uses ``index.query_path`` (``encode_raw``/``project``) when the index has one; otherwise the
    index's encoder + reducer + metric, which is the same computation."""

    def __init__(self, index):
        self.index = index

    @property
    def _qp(self):
        return getattr(self.index, "query_path", None)

    @property
    def encoder(self):
        qp = self._qp
        return qp.encoder if qp is not None else self.index.encoder

    @property
    def reducer(self):
        qp = self._qp
        return qp.reducer if qp is not None else self.index.reducer

    def encode_raw(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw encoder rows and the tokens the model read for each text, from the encoder's own
        tokenisation on the encoder thread (per text, so merged requests are counted apart). The texts
        run as length-sorted passes of the encoder's own batch size."""
        qp = self._qp
        if qp is not None:
            raw, tokens = qp.encode_raw_with_usage(texts, show_progress_bar=False)
        else:
            raw = self.index.encoder.encode(texts, normalize=False, show_progress_bar=False)
            tokens = None
        if tokens is None:  # an encoder without usage reporting: count with its tokenizer, on this thread
            tokens = np.asarray(self.encoder.tokenize(list(texts))["attention_mask"]).sum(axis=1)
        return raw, tokens

    def project(self, raw: np.ndarray) -> np.ndarray:
        qp = self._qp
        if qp is not None:
            return qp.project(raw)
        vecs = self.index.reducer.transform(raw)
        return l2_normalize(vecs) if self.index.metric == "cosine" else np.ascontiguousarray(vecs, dtype=np.float32)


class Service:
    def __init__(self, index, settings: Settings, metrics: Metrics):
        self.index = index
        self.settings = settings
        self.path = QueryPathAdapter(index)
        self.batcher = MicroBatcher(self._encode_raw, max_batch=settings.max_batch, wait_ms=settings.batch_wait_ms,
                                    max_queue=settings.max_queue, merge=settings.batching,
                                    max_tokens=settings.max_batch_tokens, on_batch=metrics.observe_batch,
                                    on_abandon=metrics.observe_abandoned)
        self.model_name = settings.model_name or Path(str(self.path.encoder.model_name)).name
        metrics.bind(lambda: self.batcher.queue_depth, lambda: len(self.index))
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        # Searches and index writes run here. Each FAISS call uses settings.search_threads OpenMP
        # threads: concurrency comes from concurrent requests, and OpenMP teams per small query cost
        # far more than the search itself (9 ms vs 0.03 ms measured for one query on a 361-document
        # flat index on a busy 2-core machine).
        self._pool = ThreadPoolExecutor(max_workers=self.settings.worker_threads,
                                        thread_name_prefix="embedkit-worker", initializer=_limit_faiss_threads,
                                        initargs=(self.settings.search_threads,))
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)

    async def _run(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _serialise(self, fn, floats: int) -> bytes:
        return fn() if floats <= INLINE_FLOATS else await self._run(fn)

    # -- vectors --------------------------------------------------------------------------------
    def _encode_raw(self, texts: list[str]):
        """Runs in the batcher's worker thread: raw encoder rows (before reducer/normalisation) + tokens.

        A merged batch (up to ``max_batch`` texts) runs as length-sorted forward passes of the encoder's
        own batch size, not one pass padded to its longest text."""
        return self.path.encode_raw(texts)

    def finish(self, raw: np.ndarray, *, reduce: bool = True, normalize: bool | None = None) -> np.ndarray:
        """Raw encoder rows -> served vectors. Defaults give the index's query path (what search uses)."""
        if reduce and normalize is None:
            return self.path.project(raw)
        vecs = self.path.reducer.transform(raw) if reduce else raw
        if normalize is None:
            normalize = self.index.metric == "cosine"
        return l2_normalize(vecs) if normalize else np.ascontiguousarray(vecs, dtype=np.float32)

    async def embed_raw(self, texts: list[str], *, with_tokens: bool = False):
        return await self.batcher.submit(texts, with_tokens=with_tokens)

    # -- endpoints' work ------------------------------------------------------------------------
    async def search(self, queries: list[str], top_k: int, filter: dict | None, min_score: float | None,
                     started: float, *, mode: str = "dense", min_probability: float | None = None,
                     unit: str = "documents") -> bytes:
        for attempt in (1, 2):  # the index re-embedded between encoding and searching: encode again, once
            build_id = self.index.manifest.get("build_id")
            raw = None if mode == "lexical" else await self.embed_raw(queries)

            def work(raw=raw, build_id=build_id):
                idx = self.index
                try:
                    count = len(idx)
                    rows = idx.search_embedded(queries, None if raw is None else self.finish(raw), top_k,
                                               filter=filter, min_score=min_score, mode=mode,
                                               min_probability=min_probability, unit=unit)
                except InputError:
                    if idx.manifest.get("build_id") != build_id:  # e.g. the new model's dimension
                        raise IndexRebuiltError("re-embedded while searching") from None
                    raise
                if idx.manifest.get("build_id") != build_id:
                    raise IndexRebuiltError("re-embedded while searching")
                results = [{"query": q, "hits": [h.to_dict() for h in hits]} for q, hits in zip(queries, rows)]
                took = round((time.perf_counter() - started) * 1000, 3)
                return dumps({"results": results, "count": count, "took_ms": took})

            try:
                return await self._run(work)
            except IndexRebuiltError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def similarity(self, pairs: list[tuple[str, str]]) -> bytes:
        raw = await self.embed_raw([a for a, _ in pairs] + [b for _, b in pairs])

        def work():
            qp = self.index.query_path
            vecs = self.finish(raw)
            scores = qp.score_vectors(vecs[:len(pairs)], vecs[len(pairs):])
            probs, matches = qp.calibrated(scores)
            results = [{"score": float(sc), "probability": p, "match": m} for sc, p, m in zip(scores, probs, matches)]
            return dumps({"results": results, "calibrated": qp.calibration is not None, "model": self.model_name})

        return await self._run(work)

    async def encode(self, texts: list[str], reduce: bool, normalize: bool | None) -> bytes:
        raw = await self.embed_raw(texts)
        norm = (self.index.metric == "cosine") if normalize is None else normalize

        def work():
            vecs = self.finish(raw, reduce=reduce, normalize=norm)
            return dumps({"embeddings": vecs, "dim": int(vecs.shape[1]), "reduced": reduce, "normalized": norm,
                          "model": self.model_name})

        return await self._serialise(work, raw.size)

    def check_dimensions(self, dimensions: int | None) -> None:
        dim = self.index.dim
        if dimensions is not None and not 1 <= dimensions <= dim:
            raise ApiError(422, "validation_error",
                           f"dimensions: {dimensions} is out of range; this server's embeddings have {dim} "
                           f"dimensions, so allowed values are 1..{dim} (smaller values keep the first components)")

    async def embeddings(self, texts: list[str], encoding_format: str, dimensions: int | None) -> bytes:
        self.check_dimensions(dimensions)
        raw, tokens = await self.embed_raw(texts, with_tokens=True)
        dim = self.index.dim

        def work():
            vecs = self.finish(raw)
            if dimensions is not None and dimensions < dim:
                vecs = vecs[:, :dimensions]
                vecs = l2_normalize(vecs) if self.index.metric == "cosine" else np.ascontiguousarray(vecs)
            if encoding_format == "base64":
                le = np.ascontiguousarray(vecs, dtype="<f4")
                items = [binascii.b2a_base64(row, newline=False).decode("ascii") for row in le]
            else:
                items = vecs  # orjson writes float32 rows directly
            n = int(tokens.sum())
            return dumps({"object": "list",
                          "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(items)],
                          "model": self.model_name, "usage": {"prompt_tokens": n, "total_tokens": n}})

        return await self._serialise(work, raw.size)

    def _writable(self) -> None:
        if self.settings.read_only:
            raise ApiError(403, "read_only", f"this server runs {self.settings.workers} worker processes over one "
                                             "index and serves it read-only; change documents with one worker "
                                             "(embedkit serve --workers 1) or the embedkit index commands")

    async def add_documents(self, docs: list[Doc]) -> bytes:
        self._writable()
        ids = [d.id for d in docs]
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                # 409, not 422: JSON Schema cannot state "ids unique within the array", and the document
                # set conflicts with itself just as it would with an id already in the index
                raise ApiError(409, "conflict", f"documents: id {i!r} appears more than once in this request; "
                                                "nothing was added")
            seen.add(i)
        existing = await self._run(lambda: [i for i in ids if self.index.get(i) is not None])
        if existing:
            raise ApiError(409, "conflict", f"id {existing[0]!r} is already in the index ({len(existing)} existing "
                                            "id(s) in this request); nothing was added")
        for attempt in (1, 2):  # a re-embed (or rebuild) between encoding and commit: encode again, once
            build_id = self.index.manifest.get("build_id")  # before encoding: the model the vectors come from
            ex = await self._run(lambda: self.index.passages_of(docs))  # long documents: one row per passage
            raw = await self.embed_raw(ex.texts)

            def work(ex=ex, raw=raw, build_id=build_id):
                try:
                    n = self.index.add_vectors(ex.rows, self.finish(raw), rows=True, build_id=build_id)
                except IndexRebuiltError:
                    raise
                except InputError:
                    self.index.refresh()
                    if self.index.manifest.get("build_id") != build_id:  # e.g. the new model's dimension
                        raise IndexRebuiltError("the index was re-embedded while these documents were encoded") \
                            from None
                    taken = [i for i in ids if self.index.get(i) is not None]
                    if taken:  # a concurrent request added the same id in between
                        raise ApiError(409, "conflict", f"id {taken[0]!r} is already in the index; nothing was "
                                                        "added") from None
                    raise
                return dumps({"added": n, "ids": ids, "count": len(self.index)})

            try:
                return await self._run(work)
            except IndexRebuiltError:
                if attempt == 2:
                    raise
                await self._run(self.index.refresh)
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete_document(self, doc_id: str) -> dict:
        self._writable()

        def work():
            if self.index.get(doc_id) is None:
                raise ApiError(404, "not_found", f"no document with id {doc_id!r} in the index")
            try:
                n = self.index.delete([doc_id])
            except InputError as e:  # deleted by a concurrent request in between
                raise ApiError(404, "not_found", str(e)) from None
            return {"deleted": n, "id": doc_id, "count": len(self.index)}

        return await self._run(work)

    async def get_document(self, doc_id: str) -> dict:
        hit = await self._run(lambda: self.index.get(doc_id))
        if hit is None:
            raise ApiError(404, "not_found", f"no document with id {doc_id!r} in the index")
        return {"id": hit.id, "text": hit.text, "metadata": hit.metadata}

    def info(self) -> dict:
        idx = self.index
        m = idx.manifest
        enc = m["encoder"]
        from embedkit import __version__

        return {"model": str(enc["model"]), "served_model_name": self.model_name, "pooling": enc["pooling"],
                "max_length": enc["max_length"], "backend": self.path.encoder.runtime_name,
                "reducer": m["reducer"]["spec"],
                "dim": int(m["dim"]), "encoder_dim": int(enc["dim"]), "metric": m["metric"],
                "index_type": m["index"].get("factory", str(m["index"])), "count": len(idx),
                "generation": idx.generation.name, "embedkit_version": __version__,
                "settings": self.settings.public(), "auto": self._auto_info()}

    def _auto_info(self) -> dict | None:
        decision = self.path.encoder.auto_decision
        if decision is None:
            return None
        keep = ("name", "sentences_per_s", "min_cosine", "delta", "skipped")
        return {"choice": decision.choice, "bound": decision.bound, "cached": decision.cached,
                "measured_at": decision.measured_at,
                "measurements": [{k: getattr(m, k) for k in keep} for m in decision.measurements]}


def _limit_faiss_threads(n: int) -> None:
    """Thread initializer: OpenMP settings are per thread, so each pool thread sets its own."""
    import faiss

    with contextlib.suppress(AttributeError):  # pragma: no cover - FAISS without OpenMP
        faiss.omp_set_num_threads(n)
