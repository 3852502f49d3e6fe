"""An index is one directory from which the whole query path is rebuilt (see ``directory.py`` for the
layout and ``core.py`` for the concurrency contract)."""

from .results import Hit, check_k, ids_to_delete, require_known
from .directory import CURRENT, current_generation, dir_size
from .manifest import FORMAT, FORMAT_VERSION, read_manifest

__all__ = ["CURRENT", "DEFAULT_CHUNK", "EmbedIndex", "FORMAT", "FORMAT_VERSION", "Hit", "check_k",
           "current_generation", "dir_size", "ids_to_delete", "read_manifest", "require_known"]


def __getattr__(name: str):
    """``EmbedIndex`` and ``DEFAULT_CHUNK`` load :mod:`.core` (and with it the reducers, scikit-learn) on
    first use, so a light submodule such as :mod:`.summary` can be imported without them."""
    if name in ("EmbedIndex", "DEFAULT_CHUNK"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
