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

VALID_JSON = "(CASE WHEN json_valid(metadata) THEN metadata END)"


def _loads(meta):
    """Stored metadata; a non-finite number stored before metadata was validated reads as null."""
    return json.loads(meta, parse_constant=lambda _c: None) if meta else None


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
                # as_uri() percent-escapes '#', '?' and '%' (unescaped, SQLite reads them as URI syntax)
                uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
                self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            else:
                self.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=DELETE")
            if create:
                self.conn.executescript(SCHEMA)
            self.conn.execute("SELECT count(*) FROM docs").fetchone()
            if not create:
                self._check_size()
        except sqlite3.DatabaseError as e:
            raise IndexFormatError(f"document store {self.path} is corrupt: {e}") from None
        self._lock = threading.RLock()

    def _check_size(self) -> None:
        """A file shorter than its pages (truncated by a crash or a copy) is refused when opened."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        have = self.path.stat().st_size
        if have < pages * size:
            raise IndexFormatError(f"document store {self.path} is truncated: {have} bytes, its header says "
                                   f"{pages} pages of {size} bytes")

    def integrity_problems(self) -> list[str]:
        """SQLite's own check of the file, plus rows whose metadata is not valid JSON."""
        with self._lock:
            try:
                bad = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)") if r[0] != "ok"]
            except sqlite3.DatabaseError as e:
                return [f"{self.path}: corrupt ({e})"]
            out = [f"{self.path}: {b}" for b in bad]
        ids = self.invalid_json_ids()
        if ids:
            out.append(f"{self.path}: document {ids[0]!r} has metadata that is not valid JSON (e.g. NaN) "
                       f"({len(ids)}{'+' if len(ids) >= 10 else ''} such document(s)); delete and re-add it")
        return out

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
                    out[int(iid)] = (did, text, _loads(meta))
        return out

    def get(self, doc_id: str):
        with self._lock:
            r = self.conn.execute("SELECT id, text, metadata FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return None if r is None else (r[0], r[1], _loads(r[2]))

    def filter_iids(self, where) -> np.ndarray:
        """Internal ids of documents whose metadata matches ``where`` (a Filter or a mapping)."""
        flt = Filter.parse(where)
        clause, args = flt.to_sql("metadata")
        with self._lock:
            try:
                rows = self.conn.execute(f"SELECT iid FROM docs WHERE {clause}", args).fetchall()
            except sqlite3.OperationalError as e:
                if "JSON" not in str(e):
                    raise
                # a row stored before metadata was validated (e.g. NaN) is not valid JSON: it matches
                # no field (`embedkit index check` names it); every other row is filtered as usual
                clause, args = flt.to_sql(VALID_JSON)
                rows = self.conn.execute(f"SELECT iid FROM docs WHERE {clause}", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def invalid_json_ids(self, limit: int = 10) -> list[str]:
        """Ids of documents whose stored metadata is not valid JSON (for ``index check``)."""
        with self._lock:
            return [r[0] for r in self.conn.execute(
                "SELECT id FROM docs WHERE metadata IS NOT NULL AND NOT json_valid(metadata) LIMIT ?", (limit,))]

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
                yield int(iid), did, text, _loads(meta)
            last = int(rows[-1][0])

    def id_iid(self, doc_id: str) -> int | None:
        with self._lock:
            r = self.conn.execute("SELECT iid FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return None if r is None else int(r[0])
