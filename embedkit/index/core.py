"""``EmbedIndex``: one query path over one store, persisted as one directory.

Concurrency contract
--------------------
* **Readers** (searches, ``get``, ``len``) work on an immutable snapshot and never wait for a writer.
  Before each read the index checks ``CURRENT`` (one ``stat``); when another process or object has
  committed, it switches to the new generation (reusing the unchanged base and segments).
* **Writers** (``add``, ``delete``, ``compact``, builds) may run in any number of processes and
  threads. Texts are encoded and staged *before* the directory lock is taken; the lock is then held
  across the commit, which re-reads the latest committed state, re-validates the change against it
  (ids still new, ids still present, same build), and publishes a new generation. No writer ever
  overwrites or deletes another writer's committed work. A rebuild (``--overwrite``) between a
  writer's encoding and its commit makes the commit fail with a message (its vectors came from a
  different query path).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..corpus import Doc, chunked
from ..errors import IndexFormatError, IndexRebuiltError, InputError
from ..filters import Filter
from ..reducers import Reducer
from . import directory as dirs
from .manifest import now, read_manifest, write_manifest
from .opening import _open_store
from .reads import IndexReads
from .results import ids_to_delete, require_known

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4096          # documents encoded and added per step while streaming
COMPACT_SEGMENTS = 32         # compact automatically past this many delta segments ...
COMPACT_FRACTION = 0.10       # ... or once pending changes exceed this fraction of the base


class EmbedIndex(IndexReads):
    """Query path + store, persisted as one directory (see the module docstring for concurrency)."""

    def __init__(self, directory: Path, manifest: dict, query_path, store, generation: Path, key=None):
        self.directory = Path(directory)
        self.query_path = query_path
        self._state = (manifest, store, generation, key)
        self._lock = threading.RLock()      # serialises this object's writers (never taken by a read)
        self._swap = threading.Lock()       # installs a new state; never held across I/O or another lock
        self.auto_compact = True

    manifest = property(lambda self: self._state[0])
    store = property(lambda self: self._state[1])
    backend = store  # the name older code used
    generation = property(lambda self: self._state[2])

    @property
    def encoder(self):
        return self.query_path.encoder

    @property
    def reducer(self) -> Reducer:
        return self.query_path.reducer

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    @property
    def has_passages(self) -> bool:
        """Whether documents longer than the encoder's window were split into passages at build."""
        return (self.manifest.get("passages") or {}).get("mode") == "passages"

    def __len__(self) -> int:
        """Documents (a document split into passages counts once)."""
        self.refresh()
        if self.store.LOCAL:  # the manifest counts documents at each commit (older ones: rows = documents)
            return int(self.manifest.get("documents", self.store.count()))
        if not self.has_passages:
            return int(self.store.count())
        from .passages import KEY_PASSAGE

        return int(self.store.count(Filter.parse({KEY_PASSAGE: None})))

    # -- opening and refreshing -------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike, *, encoder=None, model: str | None = None,
             backend: str = "torch", device: str | None = None) -> "EmbedIndex":
        """Open an index directory and rebuild its query path from the manifest.

        The model loads on first use. ``encoder`` (an already-loaded Encoder) or ``model`` may replace
        the recorded model, e.g. after moving the index to another machine; its pooling, max_length
        and dimension must match."""
        from .querypaths import query_path_from_manifest

        directory = Path(directory)
        for attempt in range(5):  # a concurrent commit may remove the generation we were reading
            key = dirs.current_key(directory)
            gen = dirs.current_generation(directory)
            try:
                manifest = read_manifest(gen)
                qp = query_path_from_manifest(gen, manifest, encoder=encoder, model=model, runtime=backend,
                                              device=device)
                store = _open_store(directory, gen, manifest)
            except IndexFormatError:
                if attempt < 4 and (dirs.current_key(directory) != key or dirs.moved_on(directory, gen)):
                    continue
                raise
            return cls(directory, manifest, qp, store, gen, key)
        raise AssertionError("unreachable")  # pragma: no cover

    def refresh(self) -> bool:
        """Switch to the latest committed generation if another writer committed one (without waiting
        for this object's writers, which may be queued on the directory lock)."""
        key = dirs.current_key(self.directory)
        if key == self._state[3] or key is None:
            return False
        self._reload()
        return True

    def _reload(self) -> None:
        """Open the latest generation and install it, unless another thread installed a state meanwhile
        (compare and swap: a slower reload never replaces a newer state)."""
        from .querypaths import calibration_from_manifest, query_path_from_manifest

        for attempt in range(5):
            base, qp = self._state, self.query_path
            key = dirs.current_key(self.directory)
            gen = dirs.current_generation(self.directory)
            try:
                manifest = read_manifest(gen)
                cal = qp.calibration
                if manifest.get("build_id") != base[0].get("build_id"):
                    qp = query_path_from_manifest(gen, manifest, runtime=qp.runtime, device=qp.device)
                    cal = qp.calibration
                elif manifest.get("calibration") != base[0].get("calibration"):  # calibrated elsewhere
                    cal = calibration_from_manifest(gen, manifest, qp)
                store = _open_store(self.directory, gen, manifest, previous=base[1])
            except IndexFormatError:
                if attempt < 4 and (dirs.current_key(self.directory) != key or dirs.moved_on(self.directory, gen)):
                    continue
                raise
            with self._swap:
                if self._state is base:
                    self._state, self.query_path = (manifest, store, gen, key), qp
                    qp.calibration = cal
            return

    # -- the query path ---------------------------------------------------------------------------
    def embed(self, texts, *, batch_size: int | None = None, show_progress_bar: bool | None = None) -> np.ndarray:
        """The query path: normalise → encode → reduce → L2 (cosine). Documents go through it too."""
        return self.query_path.embed(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)

    # -- building (see build.py) ------------------------------------------------------------------
    @classmethod
    def build(cls, directory, docs: Iterable[Doc], **kwargs) -> "EmbedIndex":
        """Stream ``docs`` in chunks (encode → reduce → add) into a new index directory; see
        :func:`embedkit.index.build.build_index` for the options."""
        from .build import build_index

        return build_index(cls, directory, docs, **kwargs)

    @classmethod
    def build_from_vectors(cls, directory, batches, **kwargs) -> "EmbedIndex":
        """Build from ``(documents, raw encoder vectors)`` batches (vectors computed elsewhere, e.g. by Ray)."""
        from .build import build_from_batches

        return build_from_batches(cls, directory, batches, **kwargs)

    # -- writes -----------------------------------------------------------------------------------
    def add(self, docs: Iterable[Doc], *, chunk_size: int = DEFAULT_CHUNK, batch_size: int | None = None,
            show_progress_bar: bool | None = None) -> int:
        """Encode and add documents with new ids (all or nothing). Returns how many were added."""
        from .build import check_docs, warn_truncated
        from .passages import expand
        from ..validate import check_chunk_size

        check_chunk_size(chunk_size)
        self.refresh()  # ids deleted or added by another process since the last read
        splitter = self.query_path.passage_splitter()
        truncated = []

        def batches():
            seen: set[str] = set()
            for chunk in chunked(docs, chunk_size):
                check_docs(chunk, seen)
                self._reject_existing(self.store, chunk)
                ex = expand(chunk, splitter)
                truncated.append(ex.truncated)
                yield ex.rows, self.embed(ex.texts, batch_size=batch_size, show_progress_bar=show_progress_bar)

        n = self._add_batches(batches())
        warn_truncated(sum(truncated), n, splitter)
        return n

    def passages_of(self, docs: list[Doc]):
        """The store rows and the texts to encode for ``docs`` under the index's splitting rule (an
        :class:`embedkit.index.passages.Expanded`), for :meth:`add_vectors` with ``rows=True``."""
        from .build import check_docs
        from .passages import expand

        docs = list(docs)
        check_docs(docs, set())
        return expand(docs, self.query_path.passage_splitter())

    def add_vectors(self, docs: list[Doc], vectors: np.ndarray, *, rows: bool = False, build_id: str | None = None) -> int:
        """Add documents whose vectors were already computed with :meth:`embed` (``rows``: the rows of
        :meth:`passages_of`, one vector per passage). Returns the documents added. ``build_id``: the
        manifest's ``build_id`` when the vectors were computed; if the index was rebuilt or re-embedded
        since, :class:`embedkit.errors.IndexRebuiltError` is raised and nothing is written."""
        from ..stores.faiss_backend import as_f32
        from .build import check_docs
        from ..validate import check_finite_vectors

        vectors = as_f32(vectors, self.dim, "document vectors")
        if len(docs) != vectors.shape[0]:
            raise InputError(f"got {len(docs)} {'rows' if rows else 'documents'} but {vectors.shape[0]} vectors")
        check_docs(docs, set(), rows=rows)
        check_finite_vectors(vectors, (d.id for d in docs))
        self.refresh()
        if build_id is not None and self.manifest.get("build_id") != build_id:
            raise IndexRebuiltError(f"the index in {str(self.directory)!r} was rebuilt or re-embedded after these "
                                    "vectors were computed; nothing was written — encode them again")
        self._reject_existing(self.store, docs)
        return self._add_batches(iter([(list(docs), vectors)]), build_id=build_id)

    @staticmethod
    def _reject_existing(store, docs) -> None:
        dup = store.existing_ids(d.id for d in docs)
        if dup:
            raise InputError(f"id {sorted(dup)[0]!r} is already in the index ({len(dup)} duplicate id(s) in "
                             "this batch); nothing was added")

    def _add_batches(self, batches, build_id: str | None = None) -> int:
        """Add ``(rows, vectors)`` batches; returns the documents added (rows of later passages not counted)."""
        from .passages import is_document_row

        build_id = build_id or self.manifest.get("build_id")
        if not self.store.LOCAL:
            return self._add_remote(batches, build_id)
        tmp = dirs.new_tmp(self.directory)
        try:
            staged, n = [], 0
            for chunk, vecs in batches:  # encoded and written before the lock is taken
                staged.append(self.store.stage(tmp, chunk, vecs))
                n += sum(is_document_row(d.id) for d in chunk)
            if n == 0:
                raise InputError("no documents to add")
            with self._lock, dirs.writer_lock(self.directory):
                self._reload_locked(build_id)
                ids = [d[0] for s in staged for d in s.docs]
                if len(set(ids)) != len(ids):
                    raise InputError("duplicate ids in the documents added; nothing was added")
                self._reject_existing(self.store, [Doc(i, "x") for i in ids])
                next_iid = int(self.manifest["next_iid"])
                placed = []
                for s in staged:
                    placed.append(s.at(next_iid))
                    next_iid += s.added
                self._commit(tmp, self.store.commit(placed), next_iid=next_iid, doc_delta=n)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return n

    def _add_remote(self, batches, build_id) -> int:
        """Add to a store that keeps its rows in a server. The directory lock is held *shared* (writers
        do not wait for each other; the server orders them): a re-embed switches while holding it
        exclusively, so a write lands in the collection it reads its last writes from, or fails with
        :class:`IndexRebuiltError` (it was prepared for the index before the switch)."""
        from .passages import is_document_row

        counted = []

        def counting():
            for chunk, vecs in batches:
                counted.append(sum(is_document_row(d.id) for d in chunk))
                yield chunk, vecs

        with self._lock, dirs.writer_lock(self.directory, shared=True):
            self._reload_locked(build_id)
            self.store.add_batches(counting())
        return sum(counted)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (all or nothing: an unknown id is an error). Returns the count."""
        from .passages import is_document_row, rows_of

        ids = ids_to_delete(ids)
        build_id = self.manifest.get("build_id")
        # only document ids can be known (a later passage's row id is not a document; Milvus cannot quote it)
        doc_ids = [i for i in ids if is_document_row(i)]
        if not self.store.LOCAL:  # shared lock: see _add_remote (a deletion needs no model: the latest index)
            with self._lock, dirs.writer_lock(self.directory, shared=True):
                self._reload_locked(None)
                require_known(ids, self.store.existing_ids(doc_ids))
                self.store.delete(rows_of(self.store, ids))
                return len(ids)
        self.refresh()  # validate against the latest commit (another process may have added the ids)
        require_known(ids, self.store.existing_ids(doc_ids))  # early, friendly error
        tmp = dirs.new_tmp(self.directory)
        try:
            with self._lock, dirs.writer_lock(self.directory):
                self._reload_locked(build_id)
                require_known(ids, self.store.existing_ids(doc_ids))
                found = self.store.iids_for(rows_of(self.store, ids))
                seg = self.store.stage(tmp, [], None, deleted=sorted(found.values()))
                self._commit(tmp, self.store.commit([seg.at(int(self.manifest["next_iid"]))]),
                             next_iid=int(self.manifest["next_iid"]), doc_delta=-len(ids))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return len(ids)

    def compact(self) -> bool:
        """Fold delta segments and deletions into a new base (atomic, crash-safe). False if nothing to do."""
        if not self.store.LOCAL:
            return False
        with self._lock, dirs.writer_lock(self.directory):
            self._reload_locked(None)
            return self._compact_locked()

    def _compact_locked(self) -> bool:
        if not self.store.segments:
            return False
        tmp = dirs.new_tmp(self.directory)
        try:
            dirs.link_files(self.generation, tmp)
            self._publish(tmp, self.store.compact(tmp), next_iid=int(self.manifest["next_iid"]))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    def _reload_locked(self, build_id) -> None:
        """Under the lock: adopt the latest committed state; refuse if the index was rebuilt."""
        while dirs.current_key(self.directory) != self._state[3]:  # (a racing read may install a staler state)
            self._reload()
        if build_id is not None and self.manifest.get("build_id") != build_id:
            raise IndexRebuiltError(f"the index in {str(self.directory)!r} was rebuilt by another writer while this "
                                    "change was being prepared; nothing was written — load it again and retry")

    def _commit(self, tmp: Path, store, *, next_iid: int, doc_delta: int = 0) -> None:
        dirs.link_files(self.generation, tmp)
        self._publish(tmp, store, next_iid=next_iid, doc_delta=doc_delta)
        if self.auto_compact and store.needs_compaction(COMPACT_SEGMENTS, COMPACT_FRACTION):
            try:  # the change is committed: a failed compaction must not report it as failed
                self._compact_locked()
            except Exception as e:  # noqa: BLE001 - e.g. OSError (disk full); the next write retries
                log.warning("the change to %s is committed, but the automatic compaction after it failed (%s: %s); "
                            "the next write retries it", self.directory, type(e).__name__, e)

    def _publish(self, tmp: Path, store, *, next_iid: int, doc_delta: int = 0, **extra) -> None:
        documents = int(self.manifest.get("documents", self.manifest.get("count", 0))) + doc_delta
        manifest = dict(self.manifest, index=store.describe(), count=store.count(), documents=documents,
                        next_iid=next_iid, updated_at=now(), **extra)
        write_manifest(tmp, manifest)
        gen = dirs.publish(self.directory, tmp)
        key = dirs.current_key(self.directory)
        with self._swap:
            self._state = (manifest, store, gen, key)

    def add_lexical(self, *, tune_pairs=None) -> None:
        """Add the lexical (BM25) part, compacting first, and set the hybrid fusion weight (tuned on
        ``tune_pairs``, a labelled pairs file, when given). Also re-tunes an index that has one."""
        from .hybrid import add_lexical

        add_lexical(self, tune_pairs=tune_pairs)

    def reembed(self, *, encoder=None, model: str | None = None, **kwargs) -> dict:
        """Re-embed this index's documents with another model while it keeps serving, then switch to
        it atomically (:func:`embedkit.index.reembed.reembed_index`); returns the summary. This object
        follows the switch on its next read."""
        from .reembed import reembed_index

        _, summary = reembed_index(type(self), self.directory, encoder=encoder, model=model, **kwargs)
        return summary

    def check(self) -> list[str]:
        """Verify ids, counts and files across base, segments and deletions; a list of problems."""
        from .check import check_index

        return check_index(self)
