"""An index is one directory from which the whole query path is rebuilt.

Layout::

    DIR/CURRENT                 name of the live generation, replaced atomically (os.replace)
    DIR/gen-00000003/           one complete, immutable generation
        manifest.json           model, pooling, max_length, reducer, metric, FAISS factory, count, versions
        reducer.json/.npz       the fitted reducer (no pickle)
        index.faiss             the FAISS index (int64 internal ids)
        docs.sqlite             string ids, texts and JSON metadata

Every change (build, add, delete) writes a new generation beside the live one and then switches
``CURRENT``; an interrupted build or add leaves the previous index untouched.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .backends import METRICS, FaissBackend, as_f32
from .corpus import Doc, chunked
from .encoder import l2_normalize
from .errors import IndexFormatError, InputError
from .fsutil import atomic_write_bytes, atomic_write_json, fsync_dir, make_readable, read_json
from .reducers import Reducer, make_reducer
from .store import DocStore

log = logging.getLogger(__name__)

FORMAT = "embedkit-index"
FORMAT_VERSION = 1
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
_GEN = re.compile(r"^gen-(\d{8})$")
DEFAULT_CHUNK = 4096          # documents encoded and added per step while streaming
DEFAULT_FIT_SAMPLE = 50_000   # documents the reducer and the IVF quantizer are fitted on


@dataclass
class Hit:
    id: str
    text: str
    score: float
    metadata: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    out = {"embedkit": __version__, "numpy": np.__version__}
    for mod in ("faiss", "torch", "sentence_transformers", "transformers", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return out


# ------------------------------------------------------------------------------------------------
# generations
# ------------------------------------------------------------------------------------------------
def current_generation(directory: Path) -> Path:
    if not directory.exists():
        raise IndexFormatError(f"index directory {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise IndexFormatError(f"index path {str(directory)!r} is not a directory")
    cur = directory / CURRENT
    if not cur.is_file():
        raise IndexFormatError(f"{str(directory)!r} is not a complete embedkit index (no {CURRENT} file; "
                               "an interrupted first build leaves this state — build it again)")
    name = cur.read_text(encoding="utf-8", errors="replace").strip()
    if not _GEN.match(name) or not (directory / name).is_dir():
        raise IndexFormatError(f"{cur} names generation {name!r}, which is missing or invalid")
    return directory / name


def _next_generation_name(directory: Path) -> str:
    nums = [int(m.group(1)) for p in directory.iterdir() if (m := _GEN.match(p.name))]
    return f"gen-{max(nums, default=0) + 1:08d}"


def _commit_generation(directory: Path, tmp: Path) -> Path:
    """Rename a finished temporary generation into place and switch CURRENT to it."""
    fsync_dir(tmp)
    final = directory / _next_generation_name(directory)
    os.rename(tmp, final)
    fsync_dir(directory)
    atomic_write_bytes(directory / CURRENT, (final.name + "\n").encode())
    for p in directory.iterdir():  # old generations and leftovers of interrupted writes
        if p != final and (_GEN.match(p.name) or p.name.startswith(".tmp-gen-")):
            shutil.rmtree(p, ignore_errors=True)
    return final


def _new_tmp_generation(directory: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-gen-", dir=directory))
    make_readable(tmp, directory=True)
    return tmp


# ------------------------------------------------------------------------------------------------
# the index
# ------------------------------------------------------------------------------------------------
class EmbedIndex:
    """Encoder + reducer + FAISS backend + document store, persisted as one directory."""

    def __init__(self, directory: Path, manifest: dict, encoder, reducer: Reducer, backend: FaissBackend,
                 store: DocStore, generation: Path):
        self.directory = directory
        self.encoder = encoder
        self.reducer = reducer
        # Readers take this tuple once (a consistent snapshot); writers build new objects in a new
        # generation and swap the tuple, so searches never wait for an add or delete.
        self._state = (manifest, backend, store, generation)
        self._lock = threading.RLock()  # serialises writers only

    manifest = property(lambda self: self._state[0])
    backend = property(lambda self: self._state[1])
    store = property(lambda self: self._state[2])
    generation = property(lambda self: self._state[3])

    # -- query path -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def embed(self, texts, *, batch_size: int | None = None, show_progress_bar: bool | None = None) -> np.ndarray:
        """The query path: encode -> reduce -> L2-normalise (cosine). Documents go through it too."""
        return embed_with(self.encoder, self.reducer, self.metric, texts, batch_size=batch_size,
                          show_progress_bar=show_progress_bar)

    def search(self, queries, k: int = 10, *, filter: dict | None = None,
               min_score: float | None = None) -> list[list[Hit]]:
        """Top-k hits for a query string or a list of them (a list of hit lists, one per query)."""
        single = isinstance(queries, str)
        qs = [queries] if single else list(queries)
        for i, q in enumerate(qs):
            if not isinstance(q, str) or not q.strip():
                raise InputError(f"query {i} is {q!r}; queries must be non-empty strings")
        self.check_k(k)
        hits = self.search_vectors(self.embed(qs), k, filter=filter, min_score=min_score)
        return hits

    def check_k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        n = len(self)
        if k > n:
            raise InputError(f"k={k} is larger than the number of documents in the index ({n})")
        return int(k)

    def search_vectors(self, vectors: np.ndarray, k: int, *, filter: dict | None = None,
                       min_score: float | None = None) -> list[list[Hit]]:
        vectors = as_f32(vectors, self.dim, "query vectors")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        _, backend, store, _ = self._state
        allowed = store.filter_iids(filter) if filter else None
        raw = backend.search(vectors, int(k), allowed)
        docs = store.fetch({i for row in raw for _, i in row})
        out = []
        for row in raw:
            hits = []
            for score, iid in row:
                d = docs.get(iid)
                if d is None or (min_score is not None and score < min_score):
                    continue
                hits.append(Hit(d[0], d[1], score, d[2]))
            out.append(hits)
        return out

    def get(self, doc_id: str) -> Hit | None:
        """A document by id (score 1.0), or None."""
        d = self.store.get(doc_id)
        return None if d is None else Hit(d[0], d[1], 1.0, d[2])

    # -- info -----------------------------------------------------------------------------------
    def info(self) -> dict:
        m = dict(self.manifest)
        m["directory"] = str(self.directory)
        m["generation"] = self.generation.name
        m["size_bytes"] = dir_size(self.generation)
        return m

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike, *, encoder=None, model: str | None = None,
             backend: str = "torch", device: str | None = None) -> "EmbedIndex":
        """Open an index directory and rebuild its query path from the manifest.

        ``encoder`` (an already-loaded Encoder) or ``model`` may replace the recorded model, e.g. after
        moving the index to another machine; the model's pooling, max_length and dimension must match."""
        directory = Path(directory)
        gen = current_generation(directory)
        manifest = read_manifest(gen)
        enc_cfg = manifest["encoder"]
        if encoder is None:
            from .encoder import Encoder

            try:
                encoder = Encoder(model or enc_cfg["model"], pooling=enc_cfg["pooling"],
                                  max_length=enc_cfg["max_length"], backend=backend, device=device)
            except Exception as e:
                from .errors import EmbedkitError

                if isinstance(e, EmbedkitError):
                    raise type(e)(f"cannot load the index's model {enc_cfg['model']!r}: {e}") from None
                raise
        _check_encoder(encoder, enc_cfg)
        reducer = Reducer.load(gen)
        if reducer.spec != manifest["reducer"]["spec"]:
            raise IndexFormatError(f"reducer in {gen} is {reducer.spec}, manifest says {manifest['reducer']['spec']}")
        if manifest["index"].get("backend") == "milvus":  # documents and vectors live in Milvus
            from .milvus_index import MilvusIndex

            return MilvusIndex.open(directory, gen, manifest, encoder, reducer)
        be = FaissBackend.load(gen, manifest["index"], manifest["metric"], manifest["dim"])
        store = DocStore(gen / DocStore.FILE)
        if be.ntotal != manifest["count"] or store.count() != manifest["count"]:
            raise IndexFormatError(f"index {gen} is inconsistent: manifest count {manifest['count']}, FAISS "
                                   f"holds {be.ntotal}, document store {store.count()}")
        return cls(directory, manifest, encoder, reducer, be, store, gen)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, directory: str | os.PathLike, docs: Iterable[Doc], *, encoder=None,
              model: str | None = None, pooling: str = "model", max_length: int = 64,
              reduce: str | Reducer = "none", index: str = "flat", metric: str = "cosine",
              index_params: dict | None = None, chunk_size: int = DEFAULT_CHUNK,
              fit_sample: int = DEFAULT_FIT_SAMPLE, overwrite: bool = False, batch_size: int | None = None,
              show_progress_bar: bool | None = None) -> "EmbedIndex":
        """Stream ``docs`` in chunks (encode -> reduce -> add) into a new index directory.

        The reducer and any IVF quantizer are fitted on the first ``fit_sample`` documents."""
        from .encoder import Encoder

        if isinstance(index, str) and (index == "milvus" or index.startswith("milvus:")):
            from .milvus_index import MilvusIndex  # --index milvus[:TYPE]: a Milvus collection

            return MilvusIndex.build(directory, docs, encoder=encoder, model=model, pooling=pooling,
                                     max_length=max_length, reduce=reduce, index=index, metric=metric,
                                     index_params=index_params, chunk_size=chunk_size, fit_sample=fit_sample,
                                     overwrite=overwrite, batch_size=batch_size,
                                     show_progress_bar=show_progress_bar)
        if metric not in METRICS:
            raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if chunk_size <= 0 or fit_sample <= 0:
            raise InputError(f"chunk_size and fit_sample must be positive, got {chunk_size}, {fit_sample}")
        directory = Path(directory)
        _prepare_build_dir(directory, overwrite)
        reducer = make_reducer(reduce)
        encoder = encoder or Encoder(model, pooling=pooling, max_length=max_length)
        t0 = time.perf_counter()
        tmp = _new_tmp_generation(directory)
        try:
            store = DocStore(tmp / DocStore.FILE, create=True)
            sample, vecs, chunks, seen = fit_on_sample(docs, encoder, reducer, metric, chunk_size=chunk_size,
                                                       fit_sample=fit_sample, batch_size=batch_size,
                                                       show_progress_bar=show_progress_bar)
            be = FaissBackend.create(index, reducer.output_dim, metric, len(sample), index_params)
            if be.needs_training:
                log.info("training %s on %d vectors", be.factory, len(sample))
                be.train(vecs)
            next_iid = _add_chunk(be, store, sample, vecs, 0)
            del vecs
            for chunk in chunks:
                _check_unique(chunk, seen)
                vecs = embed_with(encoder, reducer, metric, [d.text for d in chunk], batch_size=batch_size,
                                  show_progress_bar=show_progress_bar)
                next_iid = _add_chunk(be, store, chunk, vecs, next_iid)
            store.close()
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": _now(), "updated_at": _now(),
                "encoder": {k: v for k, v in encoder.describe().items() if k != "backend"},
                "reducer": {"spec": reducer.spec, "dim_in": reducer.n_features_in_,
                            "dim_out": reducer.output_dim, "fitted_on": reducer.n_samples_fit_},
                "index": be.describe(), "metric": metric, "dim": reducer.output_dim,
                "count": be.ntotal, "next_iid": next_iid, "versions": _versions(),
                "build_seconds": round(time.perf_counter() - t0, 3),
            }
            reducer.save(tmp)
            be.save(tmp)
            atomic_write_json(tmp / MANIFEST, manifest)
            gen = _commit_generation(directory, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built %s: %d documents, %s, %s, dim %d, %.1fs", directory, manifest["count"],
                 reducer.spec, be.factory, manifest["dim"], manifest["build_seconds"])
        return cls(directory, manifest, encoder, reducer, be, DocStore(gen / DocStore.FILE), gen)

    # -- mutation -------------------------------------------------------------------------------
    def add(self, docs: Iterable[Doc], *, chunk_size: int = DEFAULT_CHUNK, batch_size: int | None = None,
            show_progress_bar: bool | None = None) -> int:
        """Encode and add documents; persisted as a new generation. Returns how many were added.

        Ids must be new (duplicates within the batch or with the index are rejected, nothing is
        written)."""
        with self._lock:
            tmp = _new_tmp_generation(self.directory)
            try:
                store = self.store.copy_to(tmp / DocStore.FILE)
                be = self.backend.copy()
                next_iid = int(self.manifest["next_iid"])
                seen: set[str] = set()
                n = 0
                for chunk in chunked(docs, chunk_size):
                    _check_unique(chunk, seen)
                    dup = store.existing_ids(d.id for d in chunk)
                    if dup:
                        raise InputError(f"id {sorted(dup)[0]!r} is already in the index "
                                         f"({len(dup)} duplicate id(s) in this batch); nothing was added")
                    vecs = self.embed([d.text for d in chunk], batch_size=batch_size,
                                      show_progress_bar=show_progress_bar)
                    next_iid = _add_chunk(be, store, chunk, vecs, next_iid)
                    n += len(chunk)
                if n == 0:
                    raise InputError("no documents to add")
                self._commit(tmp, be, store, next_iid)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return n

    def add_vectors(self, docs: list[Doc], vectors: np.ndarray) -> int:
        """Add documents whose vectors were already computed with :meth:`embed`."""
        vectors = as_f32(vectors, self.dim, "document vectors")
        if len(docs) != vectors.shape[0]:
            raise InputError(f"got {len(docs)} documents but {vectors.shape[0]} vectors")
        with self._lock:
            tmp = _new_tmp_generation(self.directory)
            try:
                _check_unique(docs, set())
                store = self.store.copy_to(tmp / DocStore.FILE)
                dup = store.existing_ids(d.id for d in docs)
                if dup:
                    raise InputError(f"id {sorted(dup)[0]!r} is already in the index; nothing was added")
                be = self.backend.copy()
                next_iid = _add_chunk(be, store, docs, vectors, int(self.manifest["next_iid"]))
                self._commit(tmp, be, store, next_iid)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return len(docs)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (all or nothing: an unknown id is an error). Returns the count."""
        ids = ids_to_delete(ids)
        with self._lock:
            found = self.store.iids_for(ids)
            require_known(ids, found)
            tmp = _new_tmp_generation(self.directory)
            try:
                store = self.store.copy_to(tmp / DocStore.FILE)
                be = self.backend.copy()
                iids = list(found.values())
                be.remove(iids)
                store.delete(iids)
                self._commit(tmp, be, store, int(self.manifest["next_iid"]))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return len(ids)

    def _commit(self, tmp: Path, be: FaissBackend, store: DocStore, next_iid: int) -> None:
        manifest = dict(self.manifest, index=be.describe(), count=be.ntotal, next_iid=next_iid,
                        updated_at=_now())
        if store.count() != be.ntotal:  # pragma: no cover - internal invariant
            raise IndexFormatError(f"internal error: store holds {store.count()} docs, FAISS {be.ntotal}")
        store.close()
        be.save(tmp)
        self.reducer.save(tmp)
        atomic_write_json(tmp / MANIFEST, manifest)
        gen = _commit_generation(self.directory, tmp)
        # the old store closes when the last reader holding the old snapshot lets go of it
        self._state = (manifest, be, DocStore(gen / DocStore.FILE), gen)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _finish(vecs: np.ndarray, metric: str) -> np.ndarray:
    return l2_normalize(vecs) if metric == "cosine" else np.ascontiguousarray(vecs, dtype=np.float32)


def fit_on_sample(docs: Iterable[Doc], encoder, reducer: Reducer, metric: str, *, chunk_size: int,
                  fit_sample: int, batch_size=None, show_progress_bar=None):
    """Fit ``reducer`` on the first ``fit_sample`` documents of a stream.

    Returns (sample documents, their finished vectors, the iterator of remaining chunks, the ids seen)."""
    chunks = chunked(docs, chunk_size)
    sample: list[Doc] = []
    for chunk in chunks:
        sample += chunk
        if len(sample) >= fit_sample:
            break
    if not sample:
        raise InputError("no documents to index")
    seen: set[str] = set()
    _check_unique(sample, seen)
    raw = encoder.encode([d.text for d in sample], normalize=False, batch_size=batch_size,
                         show_progress_bar=show_progress_bar)
    if reducer.kind != "none":
        log.info("fitting %s on %d vectors", reducer.spec, len(sample))
    reducer.fit(raw)
    return sample, _finish(reducer.transform(raw), metric), chunks, seen


def embed_with(encoder, reducer: Reducer, metric: str, texts, *, batch_size=None, show_progress_bar=None):
    raw = encoder.encode(texts, normalize=False, batch_size=batch_size, show_progress_bar=show_progress_bar)
    single = raw.ndim == 1
    out = _finish(reducer.transform(raw[None, :] if single else raw), metric)
    return out[0] if single else out


def _add_chunk(be: FaissBackend, store: DocStore, docs: list[Doc], vecs: np.ndarray, start: int) -> int:
    iids = np.arange(start, start + len(docs), dtype=np.int64)
    store.add(iids, docs)
    be.add(vecs, iids)
    return start + len(docs)


def _check_unique(docs: list[Doc], seen: set[str]) -> None:
    for d in docs:
        if not isinstance(d.id, str) or not d.id:
            raise InputError(f"document id {d.id!r} must be a non-empty string")
        if not isinstance(d.text, str) or not d.text.strip():
            raise InputError(f"document {d.id!r} has empty text")
        if d.id in seen:
            raise InputError(f"duplicate id {d.id!r}; ids must be unique")
        seen.add(d.id)


def ids_to_delete(ids: Iterable) -> list[str]:
    """Distinct ids as strings, in order; an empty request is an error."""
    ids = list(dict.fromkeys(str(i) for i in ids))
    if not ids:
        raise InputError("no ids to delete")
    return ids


def require_known(ids: list[str], found) -> None:
    """All-or-nothing deletes: an id missing from ``found`` rejects the whole request."""
    missing = [i for i in ids if i not in found]
    if missing:
        raise InputError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown id(s)); "
                         "nothing was deleted")


def _check_encoder(encoder, cfg: dict) -> None:
    got = encoder.describe()
    for key in ("pooling", "max_length", "dim"):
        if got[key] != cfg[key]:
            raise IndexFormatError(f"the encoder's {key} is {got[key]!r} but the index was built with "
                                   f"{cfg[key]!r}; documents and queries must go through the same path")


def read_manifest(gen: Path) -> dict:
    path = gen / MANIFEST
    m = read_json(path, "manifest")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not an embedkit index manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has format_version {m.get('format_version')!r}; this embedkit "
                               f"({__version__}) reads version {FORMAT_VERSION} — rebuild the index")
    for key in ("encoder", "reducer", "index", "metric", "dim", "count", "next_iid"):
        if key not in m:
            raise IndexFormatError(f"manifest {path} lacks {key!r}")
    return m


def _prepare_build_dir(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(f"output path {str(directory)!r} exists and is not a directory")
    if directory.is_dir():
        if (directory / CURRENT).exists():
            if not overwrite:
                raise InputError(f"{str(directory)!r} already holds an index; use --overwrite to replace "
                                 "it or `embedkit index add` to extend it")
        else:
            stray = [p.name for p in directory.iterdir() if not p.name.startswith(".tmp-gen-")
                     and not _GEN.match(p.name)]
            if stray:
                raise InputError(f"output directory {str(directory)!r} is not empty and is not an embedkit "
                                 f"index (it contains {stray[:3]}); choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
