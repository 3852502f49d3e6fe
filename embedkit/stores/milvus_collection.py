"""One Milvus collection as a vector + document container (used by :mod:`embedkit.stores.milvus_store`):
ids are the caller's strings, texts and metadata live beside the vectors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import EmbedkitError, IndexFormatError, InputError
from .milvus_client import (DEFAULT_LITE_FILE, ID_MAX_BYTES, INDEX_TYPES, INSERT_BATCH, KIND_PREFIX, QUERY_BATCH,
                            TEXT_MAX_BYTES, MilvusError, _index_params, _milvus_metric, _msg, _probe, _quote_ids,
                            _redact, _vector_dim, check_collection, check_uri, connect, default_collection,
                            filter_expression, is_remote, parse_kind, record_uri, resolve_uri)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# the backend
# ------------------------------------------------------------------------------------------------
class MilvusBackend:
    """One Milvus collection holding ids, texts, metadata and vectors (the FaissBackend method set,
    except that ids are the caller's strings and ``search`` returns documents)."""

    backend = "milvus"
    needs_training = False

    def __init__(self, client, *, uri: str, uri_recorded: str, uri_relative: bool, collection: str,
                 kind: str, metric: str, dim: int, params: dict):
        self.client = client
        self.uri = uri
        self.uri_recorded = uri_recorded
        self.uri_relative = uri_relative
        self.collection = collection
        self.kind = kind
        self.metric = metric
        self.dim = dim
        self.params = dict(params)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, dim: int, metric: str, directory: Path, n_train: int = 0,
               params: dict | None = None, overwrite: bool = False) -> "MilvusBackend":
        from pymilvus import DataType

        params = dict(params or {})
        sub = parse_kind(kind)
        uri = check_uri(params.pop("uri", None) or str(Path(directory) / DEFAULT_LITE_FILE))
        collection = check_collection(params.pop("collection", None) or default_collection(directory))
        mmetric = _milvus_metric(metric)
        build, search = _index_params(sub, n_train, params)
        client = connect(uri)
        try:
            if client.has_collection(collection):
                if not overwrite:
                    raise InputError(f"Milvus collection {collection!r} already exists at {_redact(uri)!r}; "
                                     "use --overwrite to replace it or --milvus-collection to pick another")
                client.drop_collection(collection)
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
            schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
            schema.add_field("metadata", DataType.JSON, nullable=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            ip = client.prepare_index_params()
            ip.add_index("vector", index_type=INDEX_TYPES[sub], metric_type=mmetric, params=build)
            # Strong consistency: a search right after an add or delete sees it (as with FAISS).
            client.create_collection(collection, schema=schema, index_params=ip, consistency_level="Strong")
        except EmbedkitError:
            raise
        except Exception as e:
            raise MilvusError(f"cannot create collection {collection!r} at {_redact(uri)!r}: {_msg(e)}") from None
        rec, rel = record_uri(uri, directory)
        return cls(client, uri=uri, uri_recorded=rec, uri_relative=rel, collection=collection, kind=kind,
                   metric=metric, dim=dim, params={"build": build, "search": search})

    @classmethod
    def load(cls, directory: Path, desc: dict, metric: str, dim: int) -> "MilvusBackend":
        for key in ("uri", "collection"):
            if key not in desc:
                raise IndexFormatError(f"manifest of {str(directory)!r} names a Milvus backend without {key!r}")
        uri = resolve_uri(desc, directory)
        client = connect(uri)
        coll = desc["collection"]
        try:
            if not client.has_collection(coll):
                raise IndexFormatError(f"Milvus collection {coll!r} does not exist at {_redact(uri)!r} "
                                       f"(named by the index in {str(directory)!r})")
            got = _vector_dim(client.describe_collection(coll))
            if got != dim:
                raise IndexFormatError(f"Milvus collection {coll!r} has dimension {got}, manifest says {dim}")
            client.load_collection(coll)
        except EmbedkitError:
            raise
        except Exception as e:
            raise MilvusError(f"cannot open collection {coll!r} at {_redact(uri)!r}: {_msg(e)}") from None
        return cls(client, uri=uri, uri_recorded=desc["uri"], uri_relative=bool(desc.get("uri_relative")),
                   collection=coll, kind=desc.get("type", KIND_PREFIX), metric=metric, dim=dim,
                   params=desc.get("params") or {})

    def train(self, x) -> None:  # Milvus trains its IVF lists itself when it builds the index
        return None

    # -- mutation -----------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, docs) -> None:
        """Insert documents (ids must be new: Milvus itself would keep duplicate primary keys)."""
        from .faiss_backend import as_f32

        vectors = as_f32(vectors, self.dim, "document vectors")
        if len(docs) != vectors.shape[0]:
            raise InputError(f"got {len(docs)} documents but {vectors.shape[0]} vectors")
        rows = []
        for d, v in zip(docs, vectors):
            if len(d.id.encode()) > ID_MAX_BYTES:
                raise InputError(f"document id {d.id[:40]!r}... is longer than {ID_MAX_BYTES} bytes (Milvus limit)")
            if len(d.text.encode()) > TEXT_MAX_BYTES:
                raise InputError(f"document {d.id!r} has {len(d.text.encode())} bytes of text; the Milvus "
                                 f"backend stores at most {TEXT_MAX_BYTES}")
            # {} for "no metadata": a Milvus server refuses null in a JSON field (Milvus Lite lets it through)
            rows.append({"id": d.id, "text": d.text, "metadata": {} if d.metadata is None else d.metadata,
                         "vector": v})
        for i in range(0, len(rows), INSERT_BATCH):
            # upsert: two replicas adding the same id at once leave one row, never two
            self._call("upsert", self.client.upsert, self.collection, rows[i:i + INSERT_BATCH])

    def remove(self, ids) -> None:
        ids = [str(i) for i in ids]
        for i in range(0, len(ids), INSERT_BATCH):
            self._call("delete", self.client.delete, self.collection, ids=ids[i:i + INSERT_BATCH])

    def flush(self) -> None:
        self._call("flush", self.client.flush, self.collection)

    def drop(self) -> None:
        try:
            self.client.drop_collection(self.collection)
        except Exception as e:  # pragma: no cover - best effort cleanup
            log.warning("could not drop Milvus collection %r: %s", self.collection, _msg(e))

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # pragma: no cover
            pass

    # -- reads --------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self.count()

    def count(self, filter=None) -> int:
        """Rows in the collection (those matching ``filter``, a Filter, when given)."""
        expr = filter_expression(filter) if filter is not None else ""
        res = self._call("count", self.client.query, self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def existing_ids(self, ids) -> set[str]:
        ids = [str(i) for i in ids]
        out: set[str] = set()
        for i in range(0, len(ids), INSERT_BATCH):
            part = ids[i:i + INSERT_BATCH]
            res = self._call("query", self.client.query, self.collection, filter=f"id in {_quote_ids(part)}",
                             output_fields=["id"], limit=len(part))
            out.update(r["id"] for r in res)
        return out

    def get(self, doc_id: str):
        res = self._call("get", self.client.get, self.collection, ids=[str(doc_id)],
                         output_fields=["id", "text", "metadata"])
        return None if not res else (res[0]["id"], res[0]["text"], _meta(res[0].get("metadata")))

    def iter_all(self, batch: int = 1000, with_vectors: bool = True):
        """Every document as (id, text, metadata, vector) — for export and migration."""
        fields = ["id", "text", "metadata"] + (["vector"] if with_vectors else [])
        it = self.client.query_iterator(self.collection, batch_size=batch, filter="", output_fields=fields)
        try:
            while rows := it.next():
                for r in rows:
                    yield r["id"], r["text"], _meta(r.get("metadata")), (np.asarray(r["vector"], np.float32)
                                                                   if with_vectors else None)
        finally:
            it.close()

    def search(self, q: np.ndarray, k: int, filter: dict | None = None):
        """Top-k per query row as lists of (score, id, text, metadata), best first (higher is better;
        for l2 the score is minus the squared distance, as in the FAISS backend)."""
        from .faiss_backend import as_f32

        q = as_f32(q, self.dim, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        expr = filter_expression(filter)
        sp = {"metric_type": _milvus_metric(self.metric), "params": dict(self.params.get("search") or {})}
        # k at or above the count returns every document (the one k rule): search exhaustively
        if "nprobe" in sp["params"] and k > int(sp["params"]["nprobe"]) and k >= self.count():
            sp["params"]["nprobe"] = int((self.params.get("build") or {}).get("nlist", sp["params"]["nprobe"]))
        if "ef" in sp["params"]:
            sp["params"]["ef"] = max(int(sp["params"]["ef"]), int(k))
        out = []
        for i in range(0, q.shape[0], QUERY_BATCH):
            res = self._call("search", self.client.search, self.collection, data=list(q[i:i + QUERY_BATCH]),
                             limit=int(k), filter=expr, output_fields=["text", "metadata"], search_params=sp)
            for row in res:
                hits = []
                for h in row:
                    score = float(h["distance"])
                    ent = h.get("entity") or {}
                    hits.append((-score if self.metric == "l2" else score, h["id"], ent.get("text"),
                                 _meta(ent.get("metadata"))))
                hits.sort(key=lambda t: -t[0])
                out.append(hits)
        return out

    # -- persistence --------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"backend": self.backend, "type": self.kind, "factory": f"milvus:{INDEX_TYPES[parse_kind(self.kind)]}",
                "uri": self.uri_recorded, "uri_relative": self.uri_relative, "collection": self.collection,
                "params": self.params}

    def save(self, directory) -> None:
        """Nothing to write into the generation: the data lives in Milvus; make it durable there."""
        self.flush()

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EmbedkitError:
            raise
        except Exception as e:
            where = f"Milvus {what} on collection {self.collection!r} at {_redact(self.uri)!r} failed"
            if is_remote(self.uri):  # say so plainly when the server is gone (pymilvus: "illegal params or ...")
                try:
                    _probe(self.uri, 2.0)
                except MilvusError as down:
                    raise MilvusError(f"{where}: {down}") from None
            raise MilvusError(f"{where}: {_msg(e)}") from None


def lite_dir_size(backend: MilvusBackend) -> int:
    if is_remote(backend.uri):
        return 0
    p = Path(backend.uri)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def _meta(stored):
    """Metadata as the caller gave it: a document added without any is stored as {} and reads as None."""
    return stored if stored else None
