"""Delta segments: what one commit added (documents + vectors) and deleted (internal ids).

One ``seg-<random>.npz`` file per staged change, immutable once written, loaded with
``allow_pickle=False``: ``vectors`` (float32, n × dim), ``deleted`` (int64 internal ids) and
``docs`` (UTF-8 JSON bytes of ``[[id, text, metadata], ...]``). The internal ids of the added
documents are not in the file: the commit assigns them (``first_iid`` in the manifest entry), under
the index lock, so a segment can be written before the lock is taken.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError

SEGMENT = re.compile(r"^seg-[0-9a-f]{16}\.npz$")


@dataclass(frozen=True)
class Segment:
    name: str
    first_iid: int
    vectors: np.ndarray
    deleted: np.ndarray
    docs: tuple  # ((id, text, metadata), ...) aligned with iids

    @property
    def added(self) -> int:
        return len(self.docs)

    @property
    def iids(self) -> np.ndarray:
        return np.arange(self.first_iid, self.first_iid + self.added, dtype=np.int64)

    def at(self, first_iid: int) -> "Segment":
        return Segment(self.name, int(first_iid), self.vectors, self.deleted, self.docs)

    def describe(self) -> dict:
        return {"name": self.name, "first_iid": self.first_iid, "added": self.added,
                "deleted": int(self.deleted.shape[0])}


def new_segment_name() -> str:
    return f"seg-{os.urandom(8).hex()}.npz"


def write_segment(path: Path, vectors, deleted, docs) -> Segment:
    """Write a segment file (into a commit directory that is fsynced and renamed afterwards)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    deleted = np.ascontiguousarray(deleted, dtype=np.int64)
    rows = [[d.id, d.text, d.metadata] for d in docs]
    text = json.dumps(rows, ensure_ascii=False)
    blob = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, vectors=vectors, deleted=deleted, docs=blob)
        f.flush()
        os.fsync(f.fileno())
    # the snapshot holds its own copy of the metadata (the caller may change its dicts afterwards)
    return Segment(path.name, -1, vectors, deleted, tuple(tuple(r) for r in json.loads(text)))


def read_segment(path: Path, dim: int, first_iid: int) -> Segment:
    if not path.is_file():
        raise IndexFormatError(f"segment file {path} is missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            vectors, deleted = z["vectors"], z["deleted"]
            rows = json.loads(z["docs"].tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise IndexFormatError(f"segment file {path} is corrupt: {str(e)[:200]}") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(rows) or (len(rows) and vectors.shape[1] != dim):
        raise IndexFormatError(f"segment file {path} is inconsistent: vectors {vectors.shape}, "
                               f"{len(rows)} documents, index dimension {dim}")
    return Segment(path.name, int(first_iid), np.ascontiguousarray(vectors, dtype=np.float32),
                   deleted.astype(np.int64), tuple(tuple(r) for r in rows))
