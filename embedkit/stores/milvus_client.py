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


from ..errors import EmbedkitError, InputError
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
