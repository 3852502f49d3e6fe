"""``embedkit index check``: verify an index directory across base, segments and deletions."""

from __future__ import annotations

from ..errors import EmbedkitError
from . import directory as dirs


def check_index(idx) -> list[str]:
    """Problems found (empty when the index is consistent). Damaged files give a problem, not a crash."""
    problems = []
    gen = idx.generation
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
    return [p for p in problems if p]
