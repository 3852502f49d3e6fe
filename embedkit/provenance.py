"""Provenance recorded in manifests, reports and caches (one helper each for every writer): library
versions and a cheap model-directory fingerprint."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import numpy as np

from . import __version__

_BASE = ("faiss", "torch", "sentence_transformers", "transformers", "sklearn")
_EXTRA = {"milvus": ("pymilvus",)}


def versions(*extra: str) -> dict:
    """``{"embedkit": ..., "numpy": ..., "faiss": ..., ...}`` for the libraries that are importable."""
    out = {"embedkit": __version__, "numpy": np.__version__}
    mods = list(_BASE)
    for e in extra:
        mods += list(_EXTRA.get(e, ()))
    for mod in mods:
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # pragma: no cover - optional library missing
            pass
    return out


#: Folders inside a model directory that hold artefacts derived from it (exported graphs); they are
#: not part of the model's identity, so writing an export does not change the fingerprint.
DERIVED_DIRS = ("onnx", "openvino")


def model_fingerprint(model: str | Path) -> str | None:
    """Cheap identity of a local model directory: sha256 (first 16 hex digits) over the relative path,
    size and mtime of its files, except those under :data:`DERIVED_DIRS`. ``None`` for a hub id or
    anything that is not a directory."""
    p = Path(model)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p)
        if rel.parts[0] in DERIVED_DIRS:
            continue
        st = f.stat()
        h.update(f"{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
