"""Where results come from: installed package versions and a cheap model-directory fingerprint.

One copy of each, for index manifests, evaluation results, encoding caches and exported graphs.
Nothing heavy is imported: versions are read from package metadata."""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path

#: Distributions recorded by default (installed-distribution names, as pip spells them).
DEFAULT_PACKAGES = ("embedkit", "numpy", "scipy", "faiss-cpu", "torch", "transformers", "sentence-transformers",
                    "scikit-learn", "onnxruntime", "openvino")
#: Folders inside a model directory that hold artefacts derived from it (exported graphs); they are
#: not part of the model's identity, so writing an export does not change the fingerprint.
DERIVED_DIRS = ("onnx", "openvino")


def package_versions(packages: tuple[str, ...] | list[str] = DEFAULT_PACKAGES) -> dict:
    """Python, platform and the installed version of each package (``None`` when not installed)."""
    out: dict = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


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
