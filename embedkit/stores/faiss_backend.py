"""FAISS index backends, chosen by name (``flat``, ``hnsw``, ``ivf-flat``, ``ivf-pq``, ``int8``,
``hnsw-int8``, ``binary``, ``binary-hnsw``) or by a raw FAISS factory string.

``int8`` / ``hnsw-int8`` are FAISS scalar quantisation (``SQ8``: one byte per dimension, each
dimension's range learned at training). ``binary`` / ``binary-hnsw`` are binary codes with exact
rescoring from memory-mapped vectors, in :mod:`embedkit.stores.binary_backend` (``create`` and
``load`` dispatch there by name).

Every backend takes and returns float32 contiguous arrays and int64 ids chosen by the caller; FAISS's
``-1`` padding never leaves this module.  Deletion uses ``remove_ids`` where the index supports it;
HNSW does not, so deleted ids become tombstones excluded at search time (and the graph is rebuilt
from the stored vectors once tombstones pass a quarter of it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError

from ..constants import BINARY_INDEX_TYPES as BINARY_TYPES
from ..constants import INDEX_TYPES
from .faiss_common import (  # noqa: F401  (re-exported: the names the rest of embedkit imports from here)
    HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, LOSSY, METRICS, PQ_DIMS_PER_SUBQUANTIZER,
    TOMBSTONE_REBUILD_FRACTION, _faiss, _faiss_metric, as_f32, per_vector)



def MMAP_FLAGS(faiss) -> int:  # noqa: N802 - reads as the constant it stands for
    """``read_index`` flags that map a saved index's codes from the file instead of copying them into
    RAM (``IO_FLAG_MMAP_IFC``: flat and SQ codes, HNSW storage; IVF lists are read into RAM, since FAISS
    maps them only from its own on-disk list format), read-only.
    Opening then costs what a command touches: a one-query flat search reads the file through the page
    cache once; ``index info`` and an add of one document read none of it."""
    return getattr(faiss, "IO_FLAG_MMAP_IFC", 0) | faiss.IO_FLAG_READ_ONLY


def nlist_for(n_expected: int, n_train: int | None = None) -> int:
    """IVF list count: about 4*sqrt(N) for the expected corpus size N, keeping at least 39 training
    vectors per list (FAISS' own minimum) when ``n_train`` is given."""
    if n_expected < 1:
        return 1
    n = round(4 * math.sqrt(n_expected))
    if n_train is not None:
        n = min(n, n_train // 39)
    return int(max(1, n))


def train_size_for(kind: str, n_expected: int) -> int:
    """How many vectors an index type wants for training at this corpus size (0: no training)."""
    if kind in ("ivf-flat", "ivf-pq"):
        return min(n_expected, 39 * nlist_for(n_expected))
    return 0


def factory_for(kind: str, dim: int, n_train: int, nlist: int | None = None) -> str:
    """FAISS factory string for an index type name (a string that is not a name passes through)."""
    nl = nlist if nlist is not None else nlist_for(n_train, n_train)
    if kind == "flat":
        return "IDMap2,Flat"
    if kind == "hnsw":
        return f"IDMap2,HNSW{HNSW_M},Flat"
    if kind == "int8":  # IDMap, not IDMap2: lossy codes are never read back by id, and IDMap2's reverse
        return "IDMap,SQ8"  # hash map would cost ~50 bytes per vector of RAM beside the 1 byte per dimension
    if kind == "hnsw-int8":
        return f"IDMap,HNSW{HNSW_M}_SQ8"
    if kind == "ivf-flat":
        return f"IVF{nl},Flat"
    if kind == "ivf-pq":
        m = _pq_m(dim)
        nbits = 8 if n_train >= 256 * 4 else max(1, min(8, int(math.log2(max(2, n_train // 4)))))
        return f"IVF{nl},PQ{m}x{nbits}"
    return kind


def _pq_m(dim: int) -> int:
    target = max(1, dim // PQ_DIMS_PER_SUBQUANTIZER)
    for m in range(target, 0, -1):  # largest divisor of dim not above the target
        if dim % m == 0:
            return m
    return 1


class FaissBackend:
    """One FAISS index plus the little state FAISS lacks (tombstones for HNSW)."""

    backend = "faiss"
    FILE = "index.faiss"
    TOMBSTONES = "tombstones.npy"

    def __init__(self, index, kind: str, factory: str, metric: str, dim: int, params: dict | None = None,
                 tombstones: np.ndarray | None = None):
        self.index = index
        self.kind = kind
        self.factory = factory
        self.metric = metric
        self.dim = dim
        self.params = dict(params or {})
        self.tombstones = set() if tombstones is None else {int(t) for t in tombstones}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, dim: int, metric: str = "cosine", n_train: int = 0,
               params: dict | None = None) -> "FaissBackend":
        faiss = _faiss()
        if kind in BINARY_TYPES:
            from .binary_backend import BinaryBackend

            return BinaryBackend.create(kind, dim, metric, n_train, params)
        if not isinstance(dim, int) or dim <= 0:
            raise InputError(f"dimension must be a positive integer, got {dim!r}")
        params = dict(params or {})
        nlist = params.pop("nlist", None)
        factory = factory_for(kind, dim, n_train, nlist)
        metric_type = _faiss_metric(metric)
        try:
            index = faiss.index_factory(dim, factory, metric_type)
        except RuntimeError as e:
            raise InputError(f"index {kind!r} is not one of {', '.join(INDEX_TYPES)} nor a FAISS factory "
                             f"string that builds for dimension {dim} (e.g. 'IVF256,PQ32'): "
                             f"{str(e).strip().splitlines()[-1][:200]}") from None
        if not _supports_ids(index):
            index = faiss.IndexIDMap2(index)
            factory = "IDMap2," + factory
        defaults = {}
        inner = _inner(index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = int((params or {}).get("efConstruction", HNSW_EF_CONSTRUCTION))
            defaults = {"efSearch": HNSW_EF_SEARCH, "efConstruction": inner.hnsw.efConstruction}
        elif (ivf := _ivf(index)) is not None:
            defaults = {"nprobe": min(IVF_NPROBE, ivf.nlist), "nlist": int(ivf.nlist)}
            if isinstance(ivf := faiss.downcast_index(ivf), faiss.IndexIVFPQ):
                # Polysemous training only orders the PQ codes for Hamming pre-filtering (polysemous_ht),
                # which embedkit never turns on: same distances without it, and most of IVF-PQ's training time saved.
                ivf.do_polysemous_training = False
        defaults.update(params or {})
        return cls(index, kind if kind in INDEX_TYPES else "factory", factory, metric, dim, defaults)

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def train(self, x: np.ndarray) -> None:
        x = as_f32(x, self.dim)
        if self.index.is_trained:
            return
        ivf = _ivf(self.index)
        nlist = ivf.nlist if ivf is not None else 1
        if x.shape[0] < nlist:
            raise InputError(f"index {self.factory!r} needs at least {nlist} training vectors, got "
                             f"{x.shape[0]}; use --index flat or hnsw for small corpora")
        self.index.train(x)

    # -- mutation -----------------------------------------------------------------------------
    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        x = as_f32(x, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (x.shape[0],):
            raise InputError(f"got {x.shape[0]} vectors but {ids.shape[0]} ids")
        if not self.index.is_trained:
            raise InputError(f"index {self.factory!r} must be trained before adding vectors")
        self.index.add_with_ids(x, ids)

    def remove(self, ids) -> None:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if ids.size == 0:
            return
        faiss = _faiss()
        if isinstance(_inner(self.index), faiss.IndexHNSW):
            self.tombstones.update(int(i) for i in ids)
            if len(self.tombstones) > TOMBSTONE_REBUILD_FRACTION * max(1, self.index.ntotal):
                self._rebuild_without_tombstones()
            return
        self.index.remove_ids(ids)

    def _rebuild_without_tombstones(self) -> None:
        faiss = _faiss()
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vecs = _inner(self.index).reconstruct_n(0, self.index.ntotal)
        keep = ~np.isin(ids, np.fromiter(self.tombstones, dtype=np.int64))
        fresh = FaissBackend.create(self.kind if self.kind in INDEX_TYPES else self.factory,
                                    self.dim, self.metric, int(keep.sum()), self.params)
        if fresh.needs_training:  # keep the trained quantizer (SQ8): decoded codes encode back to themselves
            fresh.index = faiss.clone_index(self.index)
            fresh.index.reset()
        fresh.add(vecs[keep], ids[keep])
        self.index, self.tombstones = fresh.index, set()

    # -- search -------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None):
        """Top-k (scores, ids) for each query row; rows are lists without FAISS's -1 padding.

        ``allowed``: if given, only these ids may be returned (metadata filters); ``excluded``: ids
        that must not be returned (deletions recorded outside this index)."""
        faiss = _faiss()
        q = as_f32(q, self.dim, "queries")
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        keep = []  # selectors must outlive the search call
        sel = None
        gone = np.fromiter(self.tombstones, dtype=np.int64)
        if excluded is not None and len(excluded):
            gone = np.concatenate([gone, np.asarray(excluded, dtype=np.int64)])
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if gone.size:
                allowed = allowed[~np.isin(allowed, gone)]
            if allowed.size == 0:
                return [[] for _ in range(q.shape[0])]
            keep.append(np.ascontiguousarray(allowed))
            sel = faiss.IDSelectorBatch(keep[-1])
        elif gone.size:
            keep.append(np.ascontiguousarray(gone))
            keep.append(faiss.IDSelectorBatch(keep[-1]))
            sel = faiss.IDSelectorNot(keep[-1])
        keep.append(sel)
        k_eff = int(min(k, max(1, self.index.ntotal)))
        params = self._search_params(sel, k_eff)
        D, I = self.index.search(q, k_eff, params=params)
        if self.metric == "l2":
            D = -D  # higher is better everywhere: score = -squared L2 distance
        return [[(float(d), int(i)) for d, i in zip(drow, irow) if i != -1] for drow, irow in zip(D, I)]

    def _search_params(self, sel, k: int):
        """Search parameters; a k that asks for (nearly) everything searches exhaustively, so every
        index type returns min(k, count) hits."""
        faiss = _faiss()
        inner = _inner(self.index)
        everything = k >= self.ntotal
        if isinstance(inner, faiss.IndexHNSW):
            ef = max(int(self.params.get("efSearch", HNSW_EF_SEARCH)), k)
            return faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        if (ivf := _ivf(self.index)) is not None:
            nprobe = ivf.nlist if everything else int(self.params.get("nprobe", IVF_NPROBE))
            return faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def copy(self) -> "FaissBackend":
        """An independent copy (writers change a copy, readers keep searching the original)."""
        faiss = _faiss()
        index = faiss.deserialize_index(faiss.serialize_index(self.index))
        return FaissBackend(index, self.kind, self.factory, self.metric, self.dim, self.params,
                            np.fromiter(self.tombstones, dtype=np.int64))

    def reconstructor(self):
        """A function iids -> float32 vectors reading back what FAISS stores (exact codes only)."""
        faiss = _faiss()
        index = faiss.downcast_index(self.index)
        if any(tag in self.factory for tag in LOSSY):
            raise InputError(f"cannot read exact vectors back from FAISS index {self.factory!r} (lossy codes)")
        if isinstance(index, faiss.IndexIDMap2):
            return lambda iids: np.stack([index.reconstruct(int(i)) for i in iids]).astype(np.float32) \
                if len(iids) else np.zeros((0, self.dim), np.float32)
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()
            return lambda iids: np.stack([index.reconstruct(int(i)) for i in iids]).astype(np.float32) \
                if len(iids) else np.zeros((0, self.dim), np.float32)
        raise InputError(f"cannot read vectors back from FAISS index {self.factory!r}; it is not an IDMap2 or IVF "
                         "index")

    # -- persistence --------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"backend": self.backend, "type": self.kind, "factory": self.factory,
                "params": self.params, "ntotal": int(self.index.ntotal), "tombstones": len(self.tombstones)}

    def bytes_per_vector(self, directory) -> dict:
        """Per vector: code bytes (closed form) and the saved index's bytes, all of which FAISS holds in
        RAM (codes plus ids, graph links or inverted lists) and on disk."""
        files = (self.FILE, self.TOMBSTONES)
        return per_vector(directory, int(self.index.ntotal), code_size(self.index), ram=files, disk=files)

    def save(self, directory: str | os.PathLike) -> None:
        """Write into ``directory`` (a fresh generation directory: no rename dance needed per file)."""
        faiss = _faiss()
        directory = Path(directory)
        faiss.write_index(self.index, str(directory / self.FILE))
        if self.tombstones:
            np.save(directory / self.TOMBSTONES, np.fromiter(sorted(self.tombstones), dtype=np.int64),
                    allow_pickle=False)

    @classmethod
    def load(cls, directory: str | os.PathLike, desc: dict, metric: str, dim: int) -> "FaissBackend":
        faiss = _faiss()
        directory = Path(directory)
        if desc.get("type") in BINARY_TYPES:
            from .binary_backend import BinaryBackend

            return BinaryBackend.load(directory, desc, metric, dim)
        path = directory / cls.FILE
        if not path.is_file():
            raise IndexFormatError(f"FAISS file {path} is missing")
        try:  # memory-mapped, read-only: a committed base is never changed in place (compaction copies it)
            index = faiss.read_index(str(path), MMAP_FLAGS(faiss))
        except RuntimeError as e:
            raise IndexFormatError(f"FAISS file {path} is corrupt or unreadable: "
                                   f"{str(e).splitlines()[0][:200]}") from None
        if index.d != dim:
            raise IndexFormatError(f"FAISS file {path} has dimension {index.d}, manifest says {dim}")
        tomb = None
        tpath = directory / cls.TOMBSTONES
        if tpath.is_file():
            tomb = np.load(tpath, allow_pickle=False)
        return cls(index, desc.get("type", "factory"), desc.get("factory", "?"), metric, dim,
                   desc.get("params"), tomb)


def _inner(index):
    """The index under an IDMap wrapper, downcast to its concrete class."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(index.index)
    return index


def _ivf(index):
    """The IVF index inside any wrappers (IDMap, pre-transform, refine), or None: ``faiss.extract_index_ivf``."""
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError):  # TypeError: a binary index (binary_backend)
        return None


def _supports_ids(index) -> bool:
    faiss = _faiss()
    index = faiss.downcast_index(index)
    return isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexIVF))


def code_size(index) -> int:
    """Bytes of one vector's code in a FAISS index (4·d flat, d for SQ8, m·nbits/8 for PQ)."""
    faiss = _faiss()
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    return int(inner.sa_code_size())
