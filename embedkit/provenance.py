"""Library versions recorded in manifests and reports (one helper for every writer)."""

from __future__ import annotations

import importlib

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
