"""``EmbedIndex`` over a Milvus collection: the same API, with documents and vectors in Milvus.

The index directory keeps the query path only (``CURRENT`` → ``gen-N/manifest.json`` + reducer);
every add or delete goes to Milvus first and then writes a new generation whose manifest records the
new count. Because a Milvus collection is shared state (several API replicas may serve it), the
document count, the texts and the metadata are always read from Milvus, never from the manifest or a
local copy. :func:`migrate` copies a FAISS index directory into a new Milvus-backed one.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .backends import METRICS, as_f32
from .corpus import Doc, chunked
from .errors import IndexFormatError, InputError
from .fsutil import atomic_write_json
from .index import (DEFAULT_CHUNK, DEFAULT_FIT_SAMPLE, FORMAT, FORMAT_VERSION, MANIFEST, EmbedIndex, Hit,
                    _check_unique, _commit_generation, _new_tmp_generation, _now, _prepare_build_dir,
                    _versions, current_generation, embed_with, fit_on_sample, ids_to_delete, read_manifest, require_known)
from .milvus_backend import DEFAULT_LITE_FILE, MilvusBackend, is_milvus_kind, lite_dir_size, preflight
from .reducers import Reducer, make_reducer

log = logging.getLogger(__name__)


class MilvusIndex(EmbedIndex):
    """An index directory whose documents and vectors live in a Milvus collection."""

    def __init__(self, directory: Path, manifest: dict, encoder, reducer: Reducer, backend: MilvusBackend,
                 generation: Path):
        super().__init__(directory, manifest, encoder, reducer, backend, None, generation)

    # -- query path -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.backend.count()  # live: other replicas may have added or deleted documents

    def search_vectors(self, vectors: np.ndarray, k: int, *, filter: dict | None = None,
                       min_score: float | None = None) -> list[list[Hit]]:
        vectors = as_f32(vectors, self.dim, "query vectors")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        raw = self.backend.search(vectors, int(k), filter)
        return [[Hit(i, t, s, m) for s, i, t, m in row if min_score is None or s >= min_score] for row in raw]

    def get(self, doc_id: str) -> Hit | None:
        d = self.backend.get(doc_id)
        return None if d is None else Hit(d[0], d[1], 1.0, d[2])

    def info(self) -> dict:
        m = super().info()
        m["count"] = len(self)
        m["size_bytes"] += lite_dir_size(self.backend)
        return m

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, gen: Path, manifest: dict, encoder, reducer: Reducer) -> "MilvusIndex":
        be = MilvusBackend.load(directory, manifest["index"], manifest["metric"], manifest["dim"])
        n = be.count()
        if n != manifest["count"]:
            log.info("Milvus collection %r holds %d documents (manifest of %s says %d: changed elsewhere)",
                     be.collection, n, gen.name, manifest["count"])
        return cls(directory, manifest, encoder, reducer, be, gen)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, directory, docs: Iterable[Doc], *, encoder=None, model: str | None = None,
              pooling: str = "model", max_length: int = 64, reduce: str | Reducer = "none",
              index: str = "milvus", metric: str = "cosine", index_params: dict | None = None,
              chunk_size: int = DEFAULT_CHUNK, fit_sample: int = DEFAULT_FIT_SAMPLE, overwrite: bool = False,
              batch_size: int | None = None, show_progress_bar: bool | None = None) -> "MilvusIndex":
        """Stream ``docs`` (encode → reduce → insert) into a new Milvus collection; the reducer is
        fitted on the first ``fit_sample`` documents. ``index_params`` may hold ``uri`` and
        ``collection`` besides the index's own parameters."""
        from .encoder import Encoder

        if not is_milvus_kind(index):
            raise InputError(f"index {index!r} is not a Milvus index type (milvus, milvus:hnsw, ...)")
        if metric not in METRICS:
            raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if chunk_size <= 0 or fit_sample <= 0:
            raise InputError(f"chunk_size and fit_sample must be positive, got {chunk_size}, {fit_sample}")
        directory = Path(directory)
        preflight(index, directory, index_params)
        _prepare_build_dir(directory, overwrite)
        reducer = make_reducer(reduce)
        encoder = encoder or Encoder(model, pooling=pooling, max_length=max_length)
        t0 = time.perf_counter()
        sample, first, chunks, seen = fit_on_sample(docs, encoder, reducer, metric, chunk_size=chunk_size,
                                                    fit_sample=fit_sample, batch_size=batch_size,
                                                    show_progress_bar=show_progress_bar)

        def rest():
            yield sample, first
            for chunk in chunks:
                _check_unique(chunk, seen)
                yield chunk, embed_with(encoder, reducer, metric, [d.text for d in chunk], batch_size=batch_size,
                                        show_progress_bar=show_progress_bar)

        base = {"encoder": {k: v for k, v in encoder.describe().items() if k != "backend"}}
        return cls._create(directory, base, encoder, reducer, metric, index, index_params, len(sample),
                           overwrite, rest(), t0)

    @classmethod
    def _create(cls, directory: Path, base: dict, encoder, reducer: Reducer, metric: str, index: str,
                index_params: dict | None, n_train: int, overwrite: bool, batches, t0: float) -> "MilvusIndex":
        """Create the collection, insert ``batches`` of (docs, final vectors), write the generation."""
        lite_default = directory / DEFAULT_LITE_FILE
        lite_existed = lite_default.exists()
        be = MilvusBackend.create(index, reducer.output_dim, metric, directory, n_train, index_params, overwrite)
        tmp = _new_tmp_generation(directory)
        try:
            n = 0
            for docs, vecs in batches:
                be.add(vecs, docs)
                n += len(docs)
            be.flush()
            manifest = dict(base)
            manifest.update({
                "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": _now(), "updated_at": _now(),
                "reducer": {"spec": reducer.spec, "dim_in": reducer.n_features_in_,
                            "dim_out": reducer.output_dim, "fitted_on": reducer.n_samples_fit_},
                "index": be.describe(), "metric": metric, "dim": reducer.output_dim, "count": n,
                "next_iid": n, "versions": _versions(),
                "build_seconds": round(time.perf_counter() - t0, 3),
            })
            manifest["versions"]["pymilvus"] = _pymilvus_version()
            reducer.save(tmp)
            atomic_write_json(tmp / MANIFEST, manifest)
            gen = _commit_generation(directory, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            be.drop()
            if not lite_existed and Path(be.uri) == lite_default:
                be.close()
                shutil.rmtree(lite_default, ignore_errors=True)
            raise
        log.info("built %s: %d documents in Milvus collection %r (%s), %.1fs", directory, n, be.collection,
                 be.describe()["factory"], manifest["build_seconds"])
        return cls(directory, manifest, encoder, reducer, be, gen)

    # -- mutation -------------------------------------------------------------------------------
    def add(self, docs: Iterable[Doc], *, chunk_size: int = DEFAULT_CHUNK, batch_size: int | None = None,
            show_progress_bar: bool | None = None) -> int:
        """Encode and insert documents with new ids; on any error the ones inserted are removed."""
        with self._lock:
            seen: set[str] = set()
            added: list[str] = []
            try:
                for chunk in chunked(docs, chunk_size):
                    _check_unique(chunk, seen)
                    self._reject_existing(chunk, "added")
                    vecs = self.embed([d.text for d in chunk], batch_size=batch_size,
                                      show_progress_bar=show_progress_bar)
                    added += [d.id for d in chunk]
                    self.backend.add(vecs, chunk)
                if not added:
                    raise InputError("no documents to add")
                self._commit()
            except BaseException:
                if added:
                    self.backend.remove(added)
                    self.backend.flush()
                raise
            return len(added)

    def add_vectors(self, docs: list[Doc], vectors: np.ndarray) -> int:
        vectors = as_f32(vectors, self.dim, "document vectors")
        if len(docs) != vectors.shape[0]:
            raise InputError(f"got {len(docs)} documents but {vectors.shape[0]} vectors")
        with self._lock:
            _check_unique(docs, set())
            self._reject_existing(docs, "added")
            try:
                self.backend.add(vectors, docs)
                self._commit()
            except BaseException:
                self.backend.remove([d.id for d in docs])
                self.backend.flush()
                raise
            return len(docs)

    def delete(self, ids: Iterable[str]) -> int:
        ids = ids_to_delete(ids)
        with self._lock:
            require_known(ids, self.backend.existing_ids(ids))
            self.backend.remove(ids)
            self._commit()
            return len(ids)

    def _reject_existing(self, docs: list[Doc], what: str) -> None:
        dup = self.backend.existing_ids(d.id for d in docs)
        if dup:
            raise InputError(f"id {sorted(dup)[0]!r} is already in the index ({len(dup)} duplicate id(s) in "
                             f"this batch); nothing was {what}")

    def _commit(self, *_ignored) -> None:
        """Flush Milvus, then record the new count in a fresh generation."""
        self.backend.flush()
        manifest = dict(self.manifest, index=self.backend.describe(), count=self.backend.count(),
                        updated_at=_now())
        tmp = _new_tmp_generation(self.directory)
        try:
            self.reducer.save(tmp)
            atomic_write_json(tmp / MANIFEST, manifest)
            gen = _commit_generation(self.directory, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._state = (manifest, self.backend, None, gen)


# ------------------------------------------------------------------------------------------------
# FAISS -> Milvus
# ------------------------------------------------------------------------------------------------
LOSSY = ("PQ", "SQ", "LSH", "RaBitQ")


def migrate(src, dst, *, index: str = "milvus", index_params: dict | None = None, overwrite: bool = False,
            chunk_size: int = DEFAULT_CHUNK, encoder=None) -> MilvusIndex:
    """Copy the FAISS index directory ``src`` into a new Milvus-backed index directory ``dst``.

    The model, pooling, reducer and metric are kept. Vectors are read back from FAISS where it stores
    them exactly (flat, HNSW, IVF-flat); for lossy codes (PQ, SQ) the stored texts are re-encoded
    through the index's own query path (this loads the model; ``encoder`` may supply it)."""
    from .backends import FaissBackend
    from .store import DocStore

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError(f"source and destination are the same directory ({str(src)!r})")
    gen = current_generation(src)
    manifest = read_manifest(gen)
    if manifest["index"].get("backend", "faiss") != "faiss":
        raise InputError(f"{str(src)!r} is already a {manifest['index'].get('backend')} index; migrate reads a "
                         "FAISS index")
    t0 = time.perf_counter()
    reducer = Reducer.load(gen)
    fb = FaissBackend.load(gen, manifest["index"], manifest["metric"], manifest["dim"])
    store = DocStore(gen / DocStore.FILE)
    reencode = any(tag in manifest["index"].get("factory", "") for tag in LOSSY)
    preflight(index, dst, index_params)
    if reencode and encoder is None:
        from .encoder import Encoder

        cfg = manifest["encoder"]
        encoder = Encoder(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"])
    reader = None if reencode else _reconstructor(fb)
    _prepare_build_dir(dst, overwrite)

    def batches():
        rows = store.iter_all()
        for chunk in chunked(rows, chunk_size):
            docs = [Doc(did, text, meta) for _, did, text, meta in chunk]
            if reencode:
                vecs = embed_with(encoder, reducer, manifest["metric"], [d.text for d in docs])
            else:
                vecs = reader(np.fromiter((iid for iid, *_ in chunk), dtype=np.int64, count=len(chunk)))
            yield docs, vecs

    base = {"encoder": manifest["encoder"],
            "migrated_from": {"directory": str(src.resolve()), "generation": gen.name,
                              "factory": manifest["index"].get("factory"),
                              "vectors": "re-encoded" if reencode else "reconstructed"}}
    n_src = store.count()
    idx = MilvusIndex._create(dst, base, encoder, reducer, manifest["metric"], index, index_params, n_src,
                              overwrite, batches(), t0)
    store.close()
    if idx.manifest["count"] != n_src:  # pragma: no cover - internal invariant
        raise IndexFormatError(f"migrated {idx.manifest['count']} documents, source holds {n_src}")
    return idx


def _reconstructor(fb):
    """A function iids -> float32 vectors reading back what FAISS stores (exact codes only)."""
    import faiss

    index = faiss.downcast_index(fb.index)
    if isinstance(index, faiss.IndexIDMap2):
        return lambda iids: np.stack([index.reconstruct(int(i)) for i in iids]).astype(np.float32)
    if isinstance(index, faiss.IndexIVF):
        index.make_direct_map()
        return lambda iids: np.stack([index.reconstruct(int(i)) for i in iids]).astype(np.float32)
    raise InputError(f"cannot read vectors back from FAISS index {fb.factory!r}; it is not an IDMap2 or IVF "
                     "index")


def _pymilvus_version() -> str:
    try:
        import pymilvus

        return pymilvus.__version__
    except Exception:  # pragma: no cover
        return "?"

