"""An index is one directory from which the whole query path is rebuilt (see ``directory.py`` for the
layout and ``core.py`` for the concurrency contract)."""

from .core import DEFAULT_CHUNK, EmbedIndex
from .results import Hit, check_k, ids_to_delete, require_known
from .directory import CURRENT, current_generation, dir_size
from .manifest import FORMAT, FORMAT_VERSION, read_manifest

__all__ = ["CURRENT", "DEFAULT_CHUNK", "EmbedIndex", "FORMAT", "FORMAT_VERSION", "Hit", "check_k",
           "current_generation", "dir_size", "ids_to_delete", "read_manifest", "require_known"]
