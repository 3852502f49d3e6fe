"""Binary codes with exact rescoring (index types ``binary`` and ``binary-hnsw``).

Each vector is rotated by a fixed random orthogonal matrix (which spreads the variance evenly over
the dimensions: after a PCA reducer the leading dimensions hold most of it, and equal-weight Hamming
bits then waste the trailing ones) and becomes one bit per dimension, 1 where it lies above that
dimension's median over the training sample (every bit splits the data in half); a FAISS binary index (``BFlat`` or
``BHNSW32``, Hamming distance) finds a shortlist of ``k × rescore`` rows, and the shortlist is
rescored exactly against the full-precision vectors, which stay on disk: a float32 ``.npy`` in the
generation directory opened with ``np.load(mmap_mode="r")``. Only the codes and the row → internal
id array live in RAM (``ceil(dim/8) + 8`` bytes per vector).

Files of a base (written by a build or a compaction, never changed afterwards)::

    binary.faissb     the FAISS binary index; its labels are row numbers
    vectors.npy       float32, rows × dim, memory-mapped
    rows.npy          int64, the internal id of each row
    binarize.npz      float32 ``rotation`` (dim × dim) and ``thresholds`` (dim): how vectors become bits

Same method set as :class:`~embedkit.stores.faiss_backend.FaissBackend`, which dispatches here by
name. Vectors added before :meth:`save` go to an unnamed temporary file (a million-vector build does
not hold its vectors in RAM); removed rows are skipped at search time and dropped by :meth:`save`.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..constants import BINARY_INDEX_TYPES as BINARY_TYPES
from ..errors import IndexFormatError, InputError
from .faiss_common import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, _faiss, as_f32

RESCORE = 10  # shortlist = k x RESCORE rows rescored exactly (issue 12: >= 96% of float MRR@10)
CHUNK = 65536


def binary_factory(kind: str) -> str:
    return "BFlat" if kind == "binary" else f"BHNSW{HNSW_M}"


def code_size(dim: int) -> int:
    return (dim + 7) // 8


class BinaryBackend:
    """A binary Hamming index over sign-binarised vectors plus memory-mapped full vectors."""

    backend = "faiss"
    FILE = "binary.faissb"
    VECTORS = "vectors.npy"
    ROWS = "rows.npy"
    BINARIZE = "binarize.npz"
    FILES = (FILE, VECTORS, ROWS, BINARIZE)
    SEED = 0  # of the random rotation (stored, so a generation never depends on the RNG again)

    def __init__(self, kind: str, metric: str, dim: int, params: dict, index, binarize, vectors, iids,
                 ident: tuple | None = None):
        self.kind, self.metric, self.dim = kind, metric, dim
        self.factory = binary_factory(kind)
        self.params = dict(params)
        self.index = index                  # FAISS binary index over rows [0, _indexed)
        self.binarize = binarize            # (rotation, thresholds) or None until trained
        self.vectors = vectors              # memory-mapped float32 rows (or an empty array)
        self.iids = np.ascontiguousarray(iids, dtype=np.int64)  # internal id of every row
        self.ident = ident                  # (device, inode) of the vectors file mapped, once saved
        self.dead: set[int] = set()         # removed rows (dropped by save)
        self.tombstones: set[int] = set()   # FaissStore protocol: always empty here
        self._spill = None                  # temporary file of rows added since the last save
        self._pending = 0
        self._indexed = int(index.ntotal)
        self._order = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, dim: int, metric: str = "cosine", n_train: int = 0,
               params: dict | None = None) -> "BinaryBackend":
        from .faiss_common import _faiss_metric

        del n_train
        if kind not in BINARY_TYPES:
            raise InputError(f"binary index type {kind!r} is not one of {', '.join(BINARY_TYPES)}")
        if not isinstance(dim, int) or dim <= 0:
            raise InputError(f"dimension must be a positive integer, got {dim!r}")
        _faiss_metric(metric)
        p = {"rescore": RESCORE}
        if kind == "binary-hnsw":
            p.update(efSearch=HNSW_EF_SEARCH, efConstruction=HNSW_EF_CONSTRUCTION)
        p.update(params or {})
        r = p["rescore"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r < 1:
            raise InputError(f"rescore must be a number >= 1 (shortlist = k x rescore), got {r!r}")
        return cls(kind, metric, dim, p, cls._new_index(kind, dim, p), None,
                   np.zeros((0, dim), np.float32), np.zeros(0, np.int64))

    @staticmethod
    def _new_index(kind: str, dim: int, params: dict):
        index = _faiss().index_binary_factory(8 * code_size(dim), binary_factory(kind))
        if kind == "binary-hnsw":
            index.hnsw.efConstruction = int(params.get("efConstruction", HNSW_EF_CONSTRUCTION))
        return index

    @property
    def needs_training(self) -> bool:
        return self.binarize is None

    def train(self, x: np.ndarray) -> None:
        x = as_f32(x, self.dim)
        if x.shape[0] == 0:
            raise InputError("no vectors to train the binary index on")
        if self.binarize is None:
            g = np.random.default_rng(self.SEED).standard_normal((self.dim, self.dim))
            rotation = np.linalg.qr(g)[0].astype(np.float32)
            self.binarize = (rotation, np.median(x @ rotation, axis=0).astype(np.float32))

    def codes(self, x: np.ndarray) -> np.ndarray:
        """One bit per dimension, packed: 1 where the rotated value is above the dimension's median."""
        rotation, thresholds = self.binarize
        return np.packbits(np.asarray(x, np.float32) @ rotation > thresholds, axis=1)

    # -- mutation -----------------------------------------------------------------------------
    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        x = as_f32(x, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (x.shape[0],):
            raise InputError(f"got {x.shape[0]} vectors but {ids.shape[0]} ids")
        if self.binarize is None:
            raise InputError(f"index {self.kind!r} must be trained before adding vectors")
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="embedkit-binary-")
        self._spill.seek(0, os.SEEK_END)
        self._spill.write(x.tobytes())
        self._pending += x.shape[0]
        self.iids = np.concatenate([self.iids, ids])
        self._order = None

    def remove(self, ids) -> None:
        rows = self.rows_of(np.asarray(list(ids), dtype=np.int64))
        self.dead.update(int(r) for r in rows)

    # -- rows -----------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.iids.shape[0]) - len(self.dead)

    def rows_of(self, iids: np.ndarray, *, strict: bool = False) -> np.ndarray:
        """Row numbers of the internal ids held here (unknown ids dropped, or an error if ``strict``)."""
        iids = np.asarray(iids, dtype=np.int64)
        if self._order is None:
            self._order = np.argsort(self.iids, kind="stable")
        if iids.size == 0 or self.iids.size == 0:
            found = np.zeros(iids.shape, bool)
            pos = np.zeros(iids.shape, np.int64)
        else:
            sorted_iids = self.iids[self._order]
            pos = np.minimum(np.searchsorted(sorted_iids, iids), len(sorted_iids) - 1)
            found = sorted_iids[pos] == iids
        if strict and not found.all():
            raise InputError(f"internal id {int(iids[~found][0])} is not in the binary index")
        return self._order[pos[found]] if iids.size and self.iids.size else np.zeros(0, np.int64)

    def _pending_view(self) -> np.ndarray:
        self._spill.flush()
        return np.memmap(self._spill, dtype=np.float32, mode="r", shape=(self._pending, self.dim))

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Full-precision vectors of ``rows`` (read from the memory-mapped file and the spill)."""
        rows = np.asarray(rows, dtype=np.int64)
        n0 = self.vectors.shape[0]
        if self._pending == 0 or rows.size == 0 or rows.max() < n0:
            return np.asarray(self.vectors[rows], dtype=np.float32)
        out = np.empty((rows.size, self.dim), np.float32)
        old = rows < n0
        out[old] = self.vectors[rows[old]]
        out[~old] = self._pending_view()[rows[~old] - n0]
        return out

    def _catch_up(self) -> None:
        """Give the binary index the codes of rows added since it was last brought up to date."""
        total = int(self.iids.shape[0])
        for s in range(self._indexed, total, CHUNK):
            self.index.add(self.codes(self.gather(np.arange(s, min(s + CHUNK, total)))))
        self._indexed = total

    # -- search -------------------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None):
        """Top-k (score, iid) per query: a Hamming shortlist of ``k × rescore`` rows, rescored exactly."""
        faiss = _faiss()
        q = as_f32(q, self.dim, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        self._catch_up()
        gone = np.fromiter(self.dead, dtype=np.int64, count=len(self.dead))
        if excluded is not None and len(excluded):
            gone = np.union1d(gone, self.rows_of(excluded))
        if allowed is not None:
            rows = np.setdiff1d(self.rows_of(allowed), gone)
            live = int(rows.size)
        else:
            rows = None
            live = int(self.iids.shape[0]) - int(gone.size)
        if live == 0:
            return [[] for _ in range(q.shape[0])]
        k = int(min(k, live))
        short = int(min(live, max(k, round(k * float(self.params.get("rescore", RESCORE))))))
        if short >= live:  # the shortlist is everything: score every selectable row exactly
            every = rows if rows is not None else np.setdiff1d(np.arange(self.iids.shape[0]), gone)
            return self._rescore(q, np.broadcast_to(every, (q.shape[0], every.size)), k)
        keep = [np.ascontiguousarray(rows if rows is not None else gone)]
        sel = faiss.IDSelectorBatch(keep[0])
        if rows is None:
            keep.append(sel)
            sel = faiss.IDSelectorNot(sel)
        if self.kind == "binary-hnsw":
            ef = max(int(self.params.get("efSearch", HNSW_EF_SEARCH)), short)
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        else:
            params = faiss.SearchParameters(sel=sel)
        _, cand = self.index.search(self.codes(q), short, params=params)
        return self._rescore(q, cand, k)

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int):
        out = []
        for qi, crow in enumerate(cand):
            rows = np.unique(crow[crow >= 0])  # sorted: sequential reads of the mapped file
            v = self.gather(rows)
            if self.metric == "l2":
                s = -np.sum((v - q[qi]) ** 2, axis=1)
            else:
                s = v @ q[qi]
            top = np.argsort(-s, kind="stable")[:k]
            out.append([(float(s[j]), int(self.iids[rows[j]])) for j in top])
        return out

    # -- copies, exact vectors ----------------------------------------------------------------------
    def copy(self) -> "BinaryBackend":
        """An independent copy (the mapped vectors file is shared: it never changes)."""
        faiss = _faiss()
        index = faiss.deserialize_index_binary(faiss.serialize_index_binary(self.index))
        other = BinaryBackend(self.kind, self.metric, self.dim, self.params, index, self.binarize,
                              self.vectors, self.iids.copy(), self.ident)
        other.dead = set(self.dead)
        other._indexed = self._indexed
        if self._spill is not None:
            self._spill.flush()
            self._spill.seek(0)
            other._spill = tempfile.TemporaryFile(prefix="embedkit-binary-")
            shutil.copyfileobj(self._spill, other._spill)
            other._pending = self._pending
        return other

    def reconstructor(self):
        """iids -> the exact float32 vectors (read from the memory-mapped file)."""
        def recon(iids):
            return self.gather(self.rows_of(np.asarray(iids, np.int64), strict=True)) if len(iids) \
                else np.zeros((0, self.dim), np.float32)
        return recon

    # -- persistence --------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"backend": self.backend, "type": self.kind, "factory": self.factory, "params": self.params,
                "ntotal": int(self.index.ntotal), "tombstones": 0}

    def bytes_per_vector(self, directory) -> dict:
        """Per vector: code bytes (closed form), bytes held in RAM (codes + row ids) and on disk (those
        + the float32 vectors); the fixed-size rotation and thresholds are not per vector."""
        from .faiss_common import per_vector

        return per_vector(directory, self.ntotal, code_size(self.dim), ram=(self.FILE, self.ROWS),
                          disk=(self.FILE, self.ROWS, self.VECTORS))

    def save(self, directory: str | os.PathLike) -> None:
        """Write a base into ``directory`` (a commit directory: linked files are unlinked, never written
        through) and switch to it: removed rows are dropped, added rows appended."""
        faiss = _faiss()
        directory = Path(directory)
        total = int(self.iids.shape[0])
        live = np.setdiff1d(np.arange(total), np.fromiter(self.dead, np.int64, len(self.dead)))
        _advise(self.vectors, "MADV_SEQUENTIAL")
        if not self.dead and not self._pending and self.ident is not None and _ident(directory / self.VECTORS) \
                == self.ident:
            return  # nothing changed and the directory holds (links to) this base's files
        for name in self.FILES:
            _unlink(directory / name)
        vec_path = directory / self.VECTORS
        out = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float32, shape=(live.size, self.dim))
        for s in range(0, live.size, CHUNK):
            out[s:s + CHUNK] = self.gather(live[s:s + CHUNK])
        out.flush()
        del out
        _advise(self.vectors, "MADV_RANDOM")  # the copy above read it in order; searches read rows
        if self.dead:  # rows renumbered: new codes
            self.index = self._new_index(self.kind, self.dim, self.params)
            self._indexed = 0
        iids = self.iids[live]
        self.dead, self.iids, self._order = set(), iids, None
        self.vectors, self.ident = _map(vec_path), _ident(vec_path)
        if self._spill is not None:
            self._spill.close()
        self._spill, self._pending = None, 0
        self._catch_up()
        faiss.write_index_binary(self.index, str(directory / self.FILE))
        np.save(directory / self.ROWS, iids, allow_pickle=False)
        rotation, thresholds = self.binarize
        with open(directory / self.BINARIZE, "wb") as f:
            np.savez(f, rotation=rotation, thresholds=thresholds)

    @classmethod
    def load(cls, directory: str | os.PathLike, desc: dict, metric: str, dim: int) -> "BinaryBackend":
        faiss = _faiss()
        directory = Path(directory)
        for name in cls.FILES:
            if not (directory / name).is_file():
                raise IndexFormatError(f"binary index file {directory / name} is missing")
        try:
            index = faiss.read_index_binary(str(directory / cls.FILE))
        except RuntimeError as e:
            raise IndexFormatError(f"binary index file {directory / cls.FILE} is corrupt or unreadable: "
                                   f"{str(e).splitlines()[0][:200]}") from None
        arrays = {}
        for name in (cls.VECTORS, cls.ROWS, cls.BINARIZE):
            try:
                arrays[name] = _map(directory / name) if name == cls.VECTORS else \
                    np.load(directory / name, allow_pickle=False)
                if name == cls.BINARIZE:
                    with arrays[name] as z:
                        arrays[name] = (z["rotation"], z["thresholds"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise IndexFormatError(f"binary index file {directory / name} is corrupt: {str(e)[:200]}") from None
        vectors, iids, (rot, thr) = arrays[cls.VECTORS], arrays[cls.ROWS], arrays[cls.BINARIZE]
        n = int(index.ntotal)
        if vectors.dtype != np.float32 or vectors.shape != (n, dim) or iids.shape != (n,) or thr.shape != (dim,) \
                or rot.shape != (dim, dim) or index.code_size != code_size(dim):
            raise IndexFormatError(f"binary index in {directory} is inconsistent: {n} codes of {index.code_size} "
                                   f"bytes, vectors {vectors.shape} {vectors.dtype}, {iids.shape[0]} row ids, "
                                   f"rotation {rot.shape}, {thr.shape[0]} thresholds; manifest dimension {dim}")
        kind = desc.get("type", "binary")
        be = cls(kind, metric, dim, desc.get("params") or {}, index,
                 (rot.astype(np.float32), thr.astype(np.float32)), vectors, iids, _ident(directory / cls.VECTORS))
        if kind == "binary-hnsw":
            index.hnsw.efSearch = int(be.params.get("efSearch", HNSW_EF_SEARCH))
        return be


def _map(path: Path) -> np.ndarray:
    """The float32 rows of a ``.npy`` file, memory-mapped read-only, with the kernel told that reads are
    random (a search touches k × rescore scattered rows: read-ahead around each page fault of a file not
    yet in the page cache would only read rows nobody asked for)."""
    vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    _advise(vectors, "MADV_RANDOM")
    return vectors


def _advise(vectors: np.ndarray, advice: str) -> None:
    if isinstance(vectors.base, mmap.mmap) and hasattr(mmap, advice):
        vectors.base.madvise(getattr(mmap, advice))


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _ident(path: Path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)
