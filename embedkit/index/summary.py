"""What ``embedkit index info`` prints, read from the committed manifest alone: no FAISS file, document
store, reducer or model is opened, so it costs the same at 1M documents as at 10 (and imports neither
torch, faiss nor scikit-learn)."""

from __future__ import annotations

from pathlib import Path

from ..errors import IndexFormatError
from . import directory as dirs
from .manifest import read_manifest


def info_dict(directory, generation: Path, manifest: dict, *, rows: int, documents: int, size_bytes: int) -> dict:
    """The manifest plus the directory, generation, counts and bytes on disk (the shape of
    :meth:`embedkit.index.EmbedIndex.info`, whichever way it was read)."""
    m = dict(manifest)
    m["directory"] = str(directory)
    m["generation"] = generation.name
    m["rows"] = int(rows)
    m["count"] = m["documents"] = int(documents)
    m["passages"] = dict(m.get("passages") or {"mode": "truncate"},
                         per_document=round(m["rows"] / m["count"], 3) if m["count"] else 0.0)
    m["size_bytes"] = int(size_bytes)
    return m


def read_info(directory) -> dict | None:
    """``info()`` of the committed generation of the index in ``directory`` from its manifest (rows and
    documents are counted at each commit); None for a store whose rows live in a server (Milvus:
    open the index and ask it)."""
    from ..stores import store_class

    directory = Path(directory)
    for attempt in range(5):  # a concurrent commit may remove the generation being read
        gen = dirs.current_generation(directory)
        try:
            manifest = read_manifest(gen)
            if not store_class(manifest["index"].get("backend", "faiss")).LOCAL:
                return None
            rows = int(manifest["count"])
            return info_dict(directory, gen, manifest, rows=rows, documents=int(manifest.get("documents", rows)),
                             size_bytes=dirs.dir_size(gen))
        except (IndexFormatError, FileNotFoundError):
            if attempt < 4 and dirs.moved_on(directory, gen):
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover
