"""Open a generation's store through the registry (used by loading, refreshing and building)."""

from __future__ import annotations

import sqlite3
import zipfile
from pathlib import Path

from ..errors import IndexFormatError
from ..stores import store_class

# what reading a damaged file raises below the stores' own checks (numpy, zipfile, SQLite)
DAMAGE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, sqlite3.DatabaseError)


def _open_store(directory: Path, gen: Path, manifest: dict, previous=None):
    desc = manifest["index"]
    cls = store_class(desc.get("backend", "faiss"))
    prev = previous if previous is not None and previous.__class__ is cls else None
    if prev is not None and (getattr(prev, "desc", None) or {}).get("lexical") != desc.get("lexical"):
        prev = None  # another process added (or rebuilt) the lexical part over the same base: read it
    try:
        return cls.open(directory, gen, desc, manifest["dim"], manifest["metric"], expected_count=manifest["count"],
                        previous=prev)
    except DAMAGE as e:
        raise IndexFormatError(f"index generation {gen} is damaged: {damaged_file(gen) or 'a file'} could not be "
                               f"read ({type(e).__name__}: {str(e)[:200]})") from None


def damaged_file(gen: Path) -> Path | None:
    """The first ``.npy`` / ``.npz`` file of ``gen`` (and its lexical part) that numpy cannot read."""
    import numpy as np

    for path in sorted(p for p in Path(gen).rglob("*") if p.suffix in (".npy", ".npz") and p.is_file()):
        try:
            z = np.load(path, allow_pickle=False)
            if hasattr(z, "files"):
                with z:
                    for name in z.files:
                        z[name]
        except DAMAGE:
            return path
    return None
