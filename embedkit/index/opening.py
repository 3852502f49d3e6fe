"""Open a generation's store through the registry (used by loading, refreshing and building)."""

from __future__ import annotations

from pathlib import Path

from ..stores import store_class


def _open_store(directory: Path, gen: Path, manifest: dict, previous=None):
    desc = manifest["index"]
    cls = store_class(desc.get("backend", "faiss"))
    prev = previous if previous is not None and previous.__class__ is cls else None
    return cls.open(directory, gen, desc, manifest["dim"], manifest["metric"], expected_count=manifest["count"],
                    previous=prev)
