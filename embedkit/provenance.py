"""Provenance recorded in manifests, reports and caches (one helper each for every writer): library
versions and a cheap model-directory fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import __version__

# key (the import name) -> distribution name, read from the installed metadata (nothing is imported)
_BASE = {"faiss": "faiss-cpu", "torch": "torch", "sentence_transformers": "sentence-transformers",
         "transformers": "transformers", "sklearn": "scikit-learn", "scipy": "scipy"}
_EXTRA = {"milvus": {"pymilvus": "pymilvus"}, "eval": {"matplotlib": "matplotlib"}}


def versions(*extra: str) -> dict:
    """``{"embedkit", "numpy", "python", "platform", "faiss", "torch", ...}``: the versions of the libraries
    that determine a manifest's or report's numbers (``extra``: ``"milvus"``, ``"eval"``); a library that
    is not installed is left out."""
    import platform
    import sys
    from importlib import metadata

    out = {"embedkit": __version__, "numpy": np.__version__, "python": sys.version.split()[0],
           "platform": platform.platform()}
    names = dict(_BASE)
    for e in extra:
        names.update(_EXTRA.get(e, {}))
    for key, dist in names.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
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
