"""Document store: SQLite table of (internal int id, external string id, text, JSON metadata).

The internal id is what FAISS holds; callers only ever see the string ids."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError
from ..filters import Filter

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    iid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT
);
"""


class DocStore:
    FILE = "docs.sqlite"

    def __init__(self, path: str | Path, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise IndexFormatError(f"document store {self.path} is missing")
        try:
            if readonly:  # a committed generation's file: immutable, shared by hard links
                uri = f"file:{self.path.resolve()}?mode=ro&immutable=1"
                self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            else:
                self.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=DELETE")
            if create:
                self.conn.executescript(SCHEMA)
            self.conn.execute("SELECT count(*) FROM docs").fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexFormatError(f"document store {self.path} is corrupt: {e}") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        self.conn.close()

    def copy_to(self, path: str | Path) -> "DocStore":
        """A consistent, writable copy (SQLite backup API) opened at ``path``."""
        dst = sqlite3.connect(str(path))
        with self._lock:
            self.conn.backup(dst)
        dst.close()
        return DocStore(path)

    def sync(self) -> None:
        """Make the file durable (the generation directory is fsynced and renamed afterwards)."""
        with self._lock:
            self.conn.close()
        with open(self.path, "rb+") as f:
            import os

            os.fsync(f.fileno())

    # -- writes -------------------------------------------------------------------------------
    def add(self, iids: np.ndarray, docs) -> None:
        rows = [(int(i), d.id, d.text, json.dumps(d.metadata, ensure_ascii=False) if d.metadata is not None
                 else None) for i, d in zip(iids, docs)]
        with self._lock:
            try:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT INTO docs(iid, id, text, metadata) VALUES (?,?,?,?)", rows)
                self.conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self.conn.execute("ROLLBACK")
                dup = self.existing_ids([r[1] for r in rows])
                raise InputError(f"duplicate id {sorted(dup)[0]!r}: already in the index"
                                 if dup else "duplicate ids in the documents added") from None

    def delete(self, iids) -> None:
        with self._lock:
            self.conn.execute("BEGIN")
            self.conn.executemany("DELETE FROM docs WHERE iid = ?", [(int(i),) for i in iids])
            self.conn.execute("COMMIT")

    # -- reads --------------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT count(*) FROM docs").fetchone()[0])

    def max_iid(self) -> int:
        with self._lock:
            v = self.conn.execute("SELECT max(iid) FROM docs").fetchone()[0]
        return -1 if v is None else int(v)

    def existing_ids(self, ids) -> set[str]:
        out: set[str] = set()
        ids = list(ids)
        with self._lock:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                q = f"SELECT id FROM docs WHERE id IN ({','.join('?' * len(part))})"
                out.update(r[0] for r in self.conn.execute(q, part))
        return out

    def iids_for(self, ids) -> dict[str, int]:
        out: dict[str, int] = {}
        ids = list(ids)
        with self._lock:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                q = f"SELECT id, iid FROM docs WHERE id IN ({','.join('?' * len(part))})"
                out.update((r[0], int(r[1])) for r in self.conn.execute(q, part))
        return out

    def fetch(self, iids) -> dict[int, tuple[str, str, dict | None]]:
        iids = [int(i) for i in iids]
        out = {}
        with self._lock:
            for i in range(0, len(iids), 500):
                part = iids[i:i + 500]
                q = f"SELECT iid, id, text, metadata FROM docs WHERE iid IN ({','.join('?' * len(part))})"
                for iid, did, text, meta in self.conn.execute(q, part):
                    out[int(iid)] = (did, text, json.loads(meta) if meta else None)
        return out

    def get(self, doc_id: str):
        with self._lock:
            r = self.conn.execute("SELECT id, text, metadata FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return None if r is None else (r[0], r[1], json.loads(r[2]) if r[2] else None)

    def filter_iids(self, where) -> np.ndarray:
        """Internal ids of documents whose metadata matches ``where`` (a Filter or a mapping)."""
        clause, args = Filter.parse(where).to_sql("metadata")
        with self._lock:
            return np.fromiter((r[0] for r in self.conn.execute(f"SELECT iid FROM docs WHERE {clause}", args)),
                               dtype=np.int64)

    def iter_all(self, batch: int = 1000):
        """(iid, id, text, metadata) in iid order, read ``batch`` rows at a time."""
        last = -1
        while True:
            with self._lock:
                rows = self.conn.execute("SELECT iid, id, text, metadata FROM docs WHERE iid > ? ORDER BY iid LIMIT ?",
                                         (last, batch)).fetchall()
            if not rows:
                return
            for iid, did, text, meta in rows:
                yield int(iid), did, text, (json.loads(meta) if meta else None)
            last = int(rows[-1][0])

    def id_iid(self, doc_id: str) -> int | None:
        with self._lock:
            r = self.conn.execute("SELECT iid FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return None if r is None else int(r[0])
