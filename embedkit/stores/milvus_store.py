"""The Milvus store: documents and vectors in a Milvus collection (Lite, standalone or cluster).

Nothing but the query path lives in the index directory: adds and deletes go to Milvus and write no
local generation; the document count, texts and metadata are always read from Milvus (other
replicas may have changed them). A build writes a **new physical collection**
(``<name>__<random>``), publishes the generation that names it, and then points the alias
``<name>`` at it and drops the previous one: readers never see a half-built collection, and
``--overwrite`` is atomic for them. Adds use upsert, so two replicas adding one id leave one row.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError
from .milvus_client import DEFAULT_LITE_FILE, MilvusError, _redact, check_collection, connect, default_collection, preflight
from .milvus_collection import MilvusBackend, lite_dir_size

log = logging.getLogger(__name__)


class MilvusBuilder:
    def __init__(self, be: MilvusBackend, alias: str, directory: Path, overwrite: bool, lite_existed: bool):
        self.be, self.alias, self.directory = be, alias, directory
        self.overwrite, self.lite_existed = overwrite, lite_existed
        self.needs_training = False

    def train(self, vectors) -> None:  # Milvus trains its IVF lists itself when it builds the index
        return None

    def add(self, docs, vectors) -> None:
        self.be.add(vectors, docs)

    def finish(self) -> dict:
        self.be.flush()
        return dict(self.be.describe(), collection=self.alias, physical=self.be.collection)

    def published(self) -> None:
        """After the generation naming the new collection is live: move the alias, drop the old one."""
        client, old = self.be.client, None
        try:
            old = client.describe_alias(self.alias).get("collection_name")
        except Exception:
            old = None
        if old is None:
            client.create_alias(self.be.collection, self.alias)
        else:
            client.alter_alias(self.be.collection, self.alias)
        if old and old != self.be.collection:
            try:
                client.drop_collection(old)
            except Exception as e:  # pragma: no cover - best effort
                log.warning("could not drop the previous Milvus collection %r: %s", old, e)

    def abort(self) -> None:
        self.be.drop()
        lite = self.directory / DEFAULT_LITE_FILE
        if not self.lite_existed and Path(self.be.uri) == lite:
            self.be.close()
            import shutil

            shutil.rmtree(lite, ignore_errors=True)


class MilvusStore:
    LOCAL = False
    name = "milvus"

    def __init__(self, be: MilvusBackend, desc: dict, directory: Path):
        self.be, self.desc, self.directory = be, desc, directory
        self.client = be.client
        self.collection = desc.get("collection", be.collection)
        self.physical = be.collection
        self._unsettled: list[str] = []  # rows of a failed add that Milvus was not there to take back

    preflight = staticmethod(preflight)

    @classmethod
    def create(cls, directory: Path, *, tmp: Path, index: str, dim: int, metric: str, n_train: int,
               expected_size: int, params: dict | None, overwrite: bool = False) -> MilvusBuilder:
        del tmp, expected_size
        params = dict(params or {})
        alias = check_collection(params.pop("collection", None) or default_collection(directory))
        uri = params.get("uri") or str(Path(directory) / DEFAULT_LITE_FILE)
        lite_existed = Path(uri).exists()
        client = connect(uri)
        taken = client.has_collection(alias)
        if taken and not overwrite:
            raise InputError(f"Milvus collection {alias!r} already exists at {_redact(uri)!r}; use --overwrite to "
                             "replace it or --milvus-collection to pick another")
        if taken:
            try:
                client.describe_alias(alias)
            except Exception:  # a plain collection of that name (built before aliases): replaced now
                client.drop_collection(alias)
        physical = f"{alias}__{os.urandom(4).hex()}"[:255]
        be = MilvusBackend.create(index, dim, metric, directory, n_train, dict(params, collection=physical),
                                  overwrite=False)
        return MilvusBuilder(be, alias, Path(directory), overwrite, lite_existed)

    @classmethod
    def open(cls, directory: Path, generation: Path, desc: dict, dim: int, metric: str, *,
             expected_count: int | None = None, previous: "MilvusStore | None" = None) -> "MilvusStore":
        del generation
        phys = dict(desc, collection=desc.get("physical", desc.get("collection")))
        if previous is not None and previous.physical == phys["collection"]:
            return previous
        try:
            be = MilvusBackend.load(directory, phys, metric, dim)
        except IndexFormatError as e:
            if desc.get("physical"):
                raise IndexFormatError(f"Milvus collection {desc['collection']!r} does not exist (its data, "
                                       f"{desc['physical']!r}, is gone): {e}") from None
            raise
        store = cls(be, desc, Path(directory))
        if expected_count is not None:
            n = store.count()
            if n != expected_count:
                log.info("Milvus collection %r holds %d documents (manifest says %d: changed elsewhere)",
                         store.collection, n, expected_count)
        return store

    # -- reads ------------------------------------------------------------------------------------
    def count(self, flt=None) -> int:
        """Rows (matching ``flt``, a Filter, when given)."""
        self._settle()
        return self.be.count(flt)

    def existing_ids(self, ids) -> set[str]:
        self._settle()
        return self.be.existing_ids(ids)

    def get(self, doc_id: str):
        self._settle()
        return self.be.get(doc_id)

    def search(self, vectors: np.ndarray, k: int, flt) -> list[list[tuple]]:
        self._settle()
        if flt is None or not flt.needs_exact_types():
            return self.be.search(vectors, k, flt)
        # Milvus compares JSON true with 1: fetch more and apply the one filter rule here
        out, limit, n = [], k, None
        while True:
            limit = min(limit * 2, 16384)
            rows = self.be.search(vectors, limit, flt)
            out = [[h for h in row if flt.matches(h[3])][:k] for row in rows]
            n = self.count() if n is None else n
            if all(len(r) >= k for r in out) or limit >= min(n, 16384):
                return out

    def iterate(self, *, with_vectors: bool = False, batch: int = 1000):
        self._settle()
        rows = []
        for did, text, meta, vec in self.be.iter_all(batch, with_vectors=with_vectors):
            rows.append((None, did, text, meta, vec))
            if len(rows) >= batch:
                yield rows
                rows = []
        if rows:
            yield rows

    def describe(self) -> dict:
        return dict(self.desc)

    def rebuild_session(self):
        """A re-embed of this index into a new collection with an alias swap (:mod:`.milvus_swap`)."""
        from .milvus_swap import MilvusSwap

        return MilvusSwap(self)

    def external_bytes(self) -> int:
        return lite_dir_size(self.be)

    # -- writes (no local generation) ---------------------------------------------------------------
    def add_batches(self, batches) -> int:
        self._settle()
        added: list[str] = []
        try:
            for chunk, vecs in batches:
                added += [d.id for d in chunk]
                self.be.add(vecs, chunk)
            if not added:
                raise InputError("no documents to add")
            self.be.flush()
        except BaseException as e:
            if added and not self._roll_back(added) and isinstance(e, MilvusError):
                raise MilvusError(f"adding documents failed, nothing was added: {e} (the rows it may have "
                                  "written are removed before this index's next read or write)") from None
            if isinstance(e, MilvusError):
                raise MilvusError(f"adding documents failed, nothing was added: {e}") from None
            raise
        return len(added)

    def _roll_back(self, ids: list[str]) -> bool:
        """Remove the rows of a failed add. When Milvus cannot take them back now (it is down: a server
        restarted from its log brings back every row it acknowledged), keep them to remove first thing."""
        try:
            self.be.remove(ids)
            self.be.flush()
            return True
        except MilvusError as e:
            log.warning("could not remove the %d rows of a failed add yet: %s", len(ids), e)
            self._unsettled = list(dict.fromkeys(self._unsettled + ids))
            return False

    def _settle(self) -> None:
        if self._unsettled:
            self.be.remove(self._unsettled)
            self.be.flush()
            self._unsettled = []

    def delete(self, ids: list[str]) -> int:
        self._settle()
        self.be.remove(ids)
        self.be.flush()
        return len(ids)

    def check(self, generation: Path) -> list[str]:
        try:
            self.be.count()
        except Exception as e:  # pragma: no cover
            return [f"Milvus collection {self.collection!r}: {e}"]
        return []

    def needs_compaction(self, *_a) -> bool:
        return False

    def close(self) -> None:
        self.be.close()
