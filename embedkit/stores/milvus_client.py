"""Milvus as an index backend, through pymilvus' ``MilvusClient``.

A URI that is a local path ending in ``.db`` runs Milvus Lite (embedded, one process at a time); an
``http(s)://host:19530`` URI talks to a Milvus standalone or distributed cluster with the same code.

What lives where
----------------
* **Milvus** holds the documents: one collection with ``id`` (VARCHAR primary key, the caller's
  string id), ``text`` (VARCHAR), ``metadata`` (JSON, nullable) and ``vector`` (FLOAT_VECTOR). Every
  API replica reads texts and metadata from it, so replicas over one cluster always agree; there is
  no per-replica SQLite copy and no internal integer id.
* **The index directory** keeps the query path: ``CURRENT`` → ``gen-N/manifest.json`` (model,
  pooling, reducer, metric, and ``index = {backend: milvus, uri, collection, type, params}``) and the
  fitted reducer. A Milvus Lite database created inside the directory (the default, ``DIR/milvus.db``)
  is recorded relative to it, so copying or moving the directory moves the data with it.
* **Credentials** never enter the manifest: they come from ``MILVUS_TOKEN`` or ``MILVUS_USER`` +
  ``MILVUS_PASSWORD``; a URI with a password in it is refused.

Index types (``--index milvus[:TYPE]``): ``flat`` (exact, the default), ``ivf-flat``, ``hnsw``,
``autoindex`` — the ones Milvus Lite builds as well as a cluster. Metadata equality filters become a
Milvus boolean expression over the JSON field and are evaluated inside Milvus.
"""

from __future__ import annotations

import json
import logging
import time
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..errors import EmbedkitError, IndexFormatError, InputError
from ..filters import Filter

log = logging.getLogger(__name__)

KIND_PREFIX = "milvus"
INDEX_TYPES = {"flat": "FLAT", "ivf-flat": "IVF_FLAT", "hnsw": "HNSW", "autoindex": "AUTOINDEX"}
DEFAULT_LITE_FILE = "milvus.db"
ID_MAX_BYTES = 1024
TEXT_MAX_BYTES = 65535          # Milvus' VARCHAR limit
INSERT_BATCH = 1000
QUERY_BATCH = 1024              # query vectors per search call (Milvus caps nq)
CONNECT_TIMEOUT_S = float(os.environ.get("EMBEDKIT_MILVUS_TIMEOUT", "5"))
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_REMOTE = ("http://", "https://", "tcp://", "grpc://", "unix://")


class MilvusError(EmbedkitError):
    """Milvus could not be reached or refused an operation (message names the URI / collection)."""


# ------------------------------------------------------------------------------------------------
# names, URIs, connections
# ------------------------------------------------------------------------------------------------
def is_milvus_kind(kind) -> bool:
    return isinstance(kind, str) and (kind == KIND_PREFIX or kind.startswith(KIND_PREFIX + ":"))


def parse_kind(kind: str) -> str:
    """``milvus`` / ``milvus:hnsw`` → the embedkit index type name (``flat``, ``hnsw``...)."""
    sub = kind.partition(":")[2] or "flat"
    if sub not in INDEX_TYPES:
        raise InputError(f"Milvus index type {sub!r} (from {kind!r}) is not one of "
                         f"{', '.join(INDEX_TYPES)}; e.g. --index milvus:hnsw")
    return sub


def default_collection(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(directory).resolve().name) or "index"
    return f"embedkit_{name}"[:255]


def check_collection(name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"Milvus collection name {name!r} must start with a letter or _ and contain only "
                         "letters, digits and _ (at most 255)")
    return name


def is_remote(uri: str) -> bool:
    return uri.lower().startswith(_REMOTE)


def check_uri(uri: str) -> str:
    """Validate a URI; refuse one that carries a password (it would end up in the manifest)."""
    if not isinstance(uri, str) or not uri.strip():
        raise InputError(f"Milvus URI {uri!r} must be a non-empty string (a local .db file or http://host:19530)")
    if is_remote(uri):
        parts = urlsplit(uri)
        if parts.password or parts.username:
            raise InputError(f"Milvus URI {_redact(uri)!r} contains credentials; pass them in MILVUS_TOKEN "
                             "or MILVUS_USER/MILVUS_PASSWORD instead (they are never written to the manifest)")
        if not parts.hostname:
            raise InputError(f"Milvus URI {uri!r} has no host")
        return uri
    if not uri.endswith(".db"):
        raise InputError(f"Milvus URI {uri!r} is neither http(s)://host:port nor a Milvus Lite file ending "
                         "in .db")
    return uri


def _redact(uri: str) -> str:
    p = urlsplit(uri)
    if p.password or p.username:
        return uri.replace(p.netloc, f"***@{p.hostname}" + (f":{p.port}" if p.port else ""))
    return uri


def record_uri(uri: str, directory: Path) -> tuple[str, bool]:
    """What the manifest stores: a Lite file inside the index directory is kept relative to it."""
    if is_remote(uri):
        return uri, False
    p = Path(uri).expanduser().resolve()
    try:
        return str(p.relative_to(Path(directory).resolve())), True
    except ValueError:
        return str(p), False


def resolve_uri(desc: dict, directory: Path) -> str:
    uri = desc["uri"]
    return str(Path(directory) / uri) if desc.get("uri_relative") else uri


def _credentials() -> dict:
    token = os.environ.get("MILVUS_TOKEN")
    if token:
        return {"token": token}
    user, password = os.environ.get("MILVUS_USER"), os.environ.get("MILVUS_PASSWORD")
    if user or password:
        return {"user": user or "", "password": password or ""}
    return {}


def _probe(uri: str, timeout: float) -> None:
    """Fail fast (bounded by ``timeout``) when nothing listens at a remote URI."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 19530)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as e:
        raise MilvusError(f"cannot reach Milvus at {_redact(uri)!r} ({parts.hostname}:{port}: "
                          f"{e.strerror or e}); check --milvus-uri and that the server is running") from None


CONNECT_ATTEMPTS = 4


def connect(uri: str, timeout: float | None = None):
    """A ``MilvusClient`` for ``uri`` (Lite file or server), failing within ``timeout`` seconds."""
    check_uri(uri)
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusError("the Milvus backend needs pymilvus and milvus-lite: pip install 'embedkit[milvus]'") \
            from None
    if is_remote(uri):
        _probe(uri, timeout)
    else:
        Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # Milvus Lite's embedded gRPC server logs the RPCs it does not implement as errors; harmless
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    target = uri if is_remote(uri) else str(Path(uri).expanduser().resolve())
    # A reachable server can still refuse a new channel for a moment (Milvus Lite's embedded gRPC
    # server answers GOAWAY "too_many_pings" under load): retry a few times, bounded.
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            return MilvusClient(uri=target, timeout=timeout, **_credentials())
        except Exception as e:  # pymilvus raises its own MilvusException or grpc errors
            if attempt + 1 == CONNECT_ATTEMPTS:
                raise MilvusError(f"cannot connect to Milvus at {_redact(uri)!r} after {CONNECT_ATTEMPTS} "
                                  f"attempts: {_msg(e)}") from None
            log.warning("Milvus connection attempt %d failed (%s); retrying", attempt + 1, _msg(e))
            time.sleep(0.5 * 2 ** attempt)


def preflight(kind: str, directory: Path, params: dict | None) -> None:
    """Check names and reach a remote server before any encoding starts (fail fast, not after hours)."""
    params = dict(params or {})
    sub = parse_kind(kind)
    uri = check_uri(params.pop("uri", None) or str(Path(directory) / DEFAULT_LITE_FILE))
    check_collection(params.pop("collection", None) or default_collection(directory))
    _index_params(sub, 0, params)
    if is_remote(uri):
        _probe(uri, CONNECT_TIMEOUT_S)


def _msg(e: Exception) -> str:
    return (getattr(e, "message", None) or str(e)).strip().splitlines()[0][:300]


# ------------------------------------------------------------------------------------------------
# filters
# ------------------------------------------------------------------------------------------------
def filter_expression(where) -> str:
    """``{"lang": "zh", "n": 3}`` → ``metadata["lang"] == "zh" and metadata["n"] == 3`` (the rule of
    :mod:`embedkit.filters`: ``None`` matches a null *or missing* field)."""
    flt = Filter.parse(where)
    return "" if flt is None else flt.to_milvus("metadata")


def _quote_ids(ids) -> str:
    return "[" + ", ".join(json.dumps(str(i), ensure_ascii=False) for i in ids) + "]"


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
            rows.append({"id": d.id, "text": d.text, "metadata": d.metadata, "vector": v})
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

    def count(self) -> int:
        res = self._call("count", self.client.query, self.collection, filter="", output_fields=["count(*)"])
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
        return None if not res else (res[0]["id"], res[0]["text"], res[0].get("metadata"))

    def iter_all(self, batch: int = 1000, with_vectors: bool = True):
        """Every document as (id, text, metadata, vector) — for export and migration."""
        fields = ["id", "text", "metadata"] + (["vector"] if with_vectors else [])
        it = self.client.query_iterator(self.collection, batch_size=batch, filter="", output_fields=fields)
        try:
            while rows := it.next():
                for r in rows:
                    yield r["id"], r["text"], r.get("metadata"), (np.asarray(r["vector"], np.float32)
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
                                 ent.get("metadata")))
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
            raise MilvusError(f"Milvus {what} on collection {self.collection!r} at {_redact(self.uri)!r} "
                              f"failed: {_msg(e)}") from None


def _milvus_metric(metric: str) -> str:
    try:
        return {"cosine": "IP", "ip": "IP", "l2": "L2"}[metric]  # cosine: vectors are L2-normalised first
    except KeyError:
        raise InputError(f"metric {metric!r} is not one of cosine, ip, l2") from None


def _index_params(sub: str, n_train: int, params: dict) -> tuple[dict, dict]:
    """(build params, search params) for an index type, from defaults and user overrides."""
    from .faiss_backend import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, nlist_for

    known = {"flat": set(), "autoindex": set(), "ivf-flat": {"nlist", "nprobe"},
             "hnsw": {"M", "efConstruction", "efSearch", "ef"}}[sub]
    unknown = set(params) - known
    if unknown:
        raise InputError(f"index parameter(s) {sorted(unknown)} do not apply to Milvus {sub!r} "
                         f"(allowed: {sorted(known) or 'none'})")
    if sub == "ivf-flat":
        nlist = int(params.get("nlist", nlist_for(max(n_train, 1))))
        return {"nlist": nlist}, {"nprobe": int(params.get("nprobe", min(IVF_NPROBE, nlist)))}
    if sub == "hnsw":
        return ({"M": int(params.get("M", HNSW_M)), "efConstruction": int(params.get("efConstruction",
                                                                                     HNSW_EF_CONSTRUCTION))},
                {"ef": int(params.get("efSearch", params.get("ef", HNSW_EF_SEARCH)))})
    return {}, {}


def _vector_dim(desc: dict) -> int | None:
    for f in desc.get("fields", []):
        if f.get("name") == "vector":
            return int(f.get("params", {}).get("dim"))
    return None


def lite_dir_size(backend: MilvusBackend) -> int:
    if is_remote(backend.uri):
        return 0
    p = Path(backend.uri)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
