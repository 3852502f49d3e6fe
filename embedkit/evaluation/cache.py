"""On-disk cache of sentence encodings, so a grid re-run with new reducers or dimensions costs no
re-encoding.

One entry per (encoder, text list): the key is the sha256 of the encoder's :meth:`describe` output (plus
a fingerprint of the model directory's files, so replaced weights invalidate it) and of the texts, in
order.  An entry is ``<dir>/<key[:2]>/<key>.npz`` holding ``vectors`` (float32, unnormalised) and
``meta`` (a JSON string); it is written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..fsutil import atomic_save_npz
from ..provenance import model_fingerprint

log = logging.getLogger(__name__)

CACHE_FORMAT = "embedkit-encodings-1"


def encoder_description(encoder) -> dict:
    """``encoder.describe()`` plus the model fingerprint: everything that determines the vectors."""
    d = dict(encoder.describe())
    d.setdefault("model_fingerprint", model_fingerprint(str(d.get("model", ""))))
    return d


def cache_key(description: dict, texts: list[str]) -> str:
    h = hashlib.sha256()
    h.update(CACHE_FORMAT.encode())
    h.update(json.dumps(description, sort_keys=True, ensure_ascii=False).encode())
    h.update(b"\0")
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class EncodingCache:
    """Get vectors for text lists, encoding only what is not cached yet.

    ``directory=None`` keeps nothing on disk (every call encodes).  Counters: ``hits``, ``misses``,
    ``n_encoded`` (sentences sent to the encoder), ``encode_s`` (time inside ``encoder.encode``) and
    ``io_s`` (time reading and writing entries)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = directory
        self.hits = 0
        self.misses = 0
        self.n_encoded = 0
        self.encode_s = 0.0
        self.io_s = 0.0

    def stats(self) -> dict:
        return {"directory": None if self.directory is None else str(self.directory), "hits": self.hits,
                "misses": self.misses, "n_encoded": self.n_encoded,
                "encode_s": round(self.encode_s, 3), "io_s": round(self.io_s, 3)}

    def _path(self, key: str) -> Path:
        return Path(self.directory) / key[:2] / f"{key}.npz"

    def _load(self, key: str, n: int, dim: int | None) -> np.ndarray | None:
        if self.directory is None:
            return None
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                v = np.ascontiguousarray(z["vectors"], dtype=np.float32)
        except Exception as e:  # corrupt / truncated entry: re-encode and overwrite it
            log.warning("ignoring unreadable cache entry %s (%s)", p, e)
            return None
        if v.ndim != 2 or v.shape[0] != n or (dim is not None and v.shape[1] != dim):
            log.warning("ignoring cache entry %s with shape %s (expected %d rows)", p, v.shape, n)
            return None
        return v

    def _save(self, key: str, vectors: np.ndarray, description: dict) -> None:
        if self.directory is None:
            return
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"format": CACHE_FORMAT, "encoder": description, "n": int(vectors.shape[0])},
                          ensure_ascii=False, sort_keys=True)
        atomic_save_npz(p, vectors=np.ascontiguousarray(vectors, dtype=np.float32), meta=np.array(meta))

    def get_many(self, encoder, text_lists: list[list[str]], *, description: dict | None = None,
                 batch_size: int | None = None, show_progress_bar: bool | None = None) -> list[np.ndarray]:
        """Vectors (float32, not normalised) for each text list.  The texts of all lists that miss
        the cache are pooled, so every distinct sentence is encoded once, then stored per list."""
        desc = description or encoder_description(encoder)
        dim = desc.get("dim")
        keys = [cache_key(desc, texts) for texts in text_lists]
        out: list[np.ndarray | None] = []
        t0 = time.perf_counter()
        for key, texts in zip(keys, text_lists):
            out.append(self._load(key, len(texts), dim))
        self.io_s += time.perf_counter() - t0
        missing = [i for i, v in enumerate(out) if v is None]
        self.hits += len(text_lists) - len(missing)
        self.misses += len(missing)
        if missing:
            index: dict[str, int] = {}
            for i in missing:
                for t in text_lists[i]:
                    index.setdefault(t, len(index))
            pool = list(index)
            t0 = time.perf_counter()
            vecs = encoder.encode(pool, batch_size=batch_size, normalize=False,
                                  show_progress_bar=show_progress_bar)
            self.encode_s += time.perf_counter() - t0
            self.n_encoded += len(pool)
            vecs = np.ascontiguousarray(vecs, dtype=np.float32)
            t0 = time.perf_counter()
            for i in missing:
                rows = np.fromiter((index[t] for t in text_lists[i]), dtype=np.int64, count=len(text_lists[i]))
                out[i] = vecs[rows]
                self._save(keys[i], out[i], desc)
            self.io_s += time.perf_counter() - t0
        return out  # type: ignore[return-value]
