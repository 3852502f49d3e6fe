"""Stores: where an index keeps its documents and vectors, behind one small protocol.

:class:`embedkit.index.EmbedIndex` (the orchestrator) owns the index directory, the query path and
the commit protocol; a store owns documents + vectors keyed by string id. Stores are resolved by
name from :data:`REGISTRY` lazily (``"name" -> "module:Class"``): importing the index imports no
backend library (no faiss, no pymilvus) until a store of that kind is used, and the core never
imports or subclasses a backend.

Every store is a **snapshot**: ``add``/``delete``/``compact`` return the store to use afterwards and
never change what a reader holding the old object sees. A store whose state lives in local files
(``LOCAL = True``, FAISS) writes those files into the commit directory it is handed; a store whose
state lives in a server (Milvus) ignores it and the orchestrator writes no new generation.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

#: store name -> "module:Class" (resolved on use)
REGISTRY: dict[str, str] = {
    "faiss": "embedkit.stores.faiss_store:FaissStore",
    "milvus": "embedkit.stores.milvus_store:MilvusStore",
}


def store_class(name: str):
    """The store class registered under ``name`` (imported now, not before)."""
    if name not in REGISTRY:
        raise InputError(f"store {name!r} is not one of {', '.join(sorted(REGISTRY))}")
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


def store_for_index(index: str) -> str:
    """The store name an ``--index`` value selects (``milvus[:TYPE]`` → milvus, else faiss)."""
    return "milvus" if isinstance(index, str) and (index == "milvus" or index.startswith("milvus:")) else "faiss"


@runtime_checkable
class Store(Protocol):
    """Documents and vectors keyed by string id (see the module docstring for the snapshot rule)."""

    LOCAL: bool  # True: state in files under the index directory, committed as generations

    # creation / opening are classmethods:
    #   create(directory, spec: dict, tmp: Path) -> Store   (an empty store, trained if needed)
    #   open(directory, generation: Path, desc: dict, dim: int, metric: str) -> Store

    def train(self, vectors: np.ndarray) -> None: ...
    def add(self, docs: list, vectors: np.ndarray, commit: Path | None) -> "Store": ...
    def delete(self, ids: list[str], commit: Path | None) -> "Store": ...
    def compact(self, commit: Path) -> "Store": ...
    def existing_ids(self, ids: Iterable[str]) -> set[str]: ...
    def get(self, doc_id: str): ...
    def search(self, vectors: np.ndarray, k: int, flt) -> list[list[tuple]]: ...
    def count(self) -> int: ...
    def iterate(self, *, with_vectors: bool = False, batch: int = 1000) -> Iterator[list[tuple]]: ...
    def describe(self) -> dict: ...
    def check(self, generation: Path) -> list[str]: ...
    def close(self) -> None: ...
