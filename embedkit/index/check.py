"""``embedkit index check``: verify an index directory across base, segments and deletions."""

from __future__ import annotations

import sqlite3

from ..errors import EmbedkitError
from . import directory as dirs


def check_index(idx) -> list[str]:
    """Problems found (empty when the index is consistent). Damaged files give a problem, not a crash."""
    problems = []
    gen = idx.generation
    docs = getattr(idx.store, "docs", None)
    if idx.store.LOCAL and hasattr(docs, "integrity_problems"):
        problems += docs.integrity_problems()
        if any("corrupt" in p or "malformed" in p for p in problems):
            return problems  # a damaged document store: the checks below would only repeat it less clearly
        problems += _segment_metadata(idx.store, gen)
    try:
        problems += idx.store.check(gen)
        manifest_count = int(idx.manifest["count"])
        if idx.store.LOCAL and idx.store.count() != manifest_count:
            problems.append(f"{gen / dirs.MANIFEST}: count {manifest_count}, the files hold {idx.store.count()}")
        if idx.store.LOCAL and idx.has_passages:
            from .passages import check_rows

            problems += check_rows(idx.store, idx.manifest.get("documents"))
    except EmbedkitError as e:
        problems.append(str(e))
    except sqlite3.DatabaseError as e:
        problems.append(f"{gen / 'docs.sqlite'}: corrupt ({e})")
    return [p for p in problems if p]


def _segment_metadata(store, gen) -> list[str]:
    """Documents in delta segments whose metadata holds a non-finite number (written before validation)."""
    from ..validate import check_metadata

    for s in getattr(store, "segments", ()):
        for doc in s.docs:
            try:
                check_metadata(doc[0], doc[2])
            except EmbedkitError as e:
                return [f"{gen / s.name}: {e}; delete and re-add it"]
    return []
