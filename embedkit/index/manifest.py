"""The manifest: what a generation holds and how to rebuild its query path (``manifest.json``)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .. import __version__
from ..errors import IndexFormatError
from ..fsutil import atomic_write_json, read_json
from .directory import MANIFEST

FORMAT = "embedkit-index"
FORMAT_VERSION = 1
REQUIRED = ("encoder", "reducer", "index", "metric", "dim", "count", "next_iid")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(gen: Path) -> dict:
    path = Path(gen) / MANIFEST
    m = read_json(path, "manifest")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not an embedkit index manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has format_version {m.get('format_version')!r}; this embedkit "
                               f"({__version__}) reads version {FORMAT_VERSION} — rebuild the index")
    for key in REQUIRED:
        if key not in m:
            raise IndexFormatError(f"manifest {path} lacks {key!r}")
    return m


def write_manifest(gen: Path, manifest: dict) -> None:
    atomic_write_json(Path(gen) / MANIFEST, manifest)
