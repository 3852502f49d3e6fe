"""Building a FAISS store's base: documents and vectors streamed into a new generation directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from .docs_sqlite import DocStore
from .faiss_backend import FaissBackend


class FaissBuilder:
    """Streams documents into a new base inside a temporary generation directory."""

    def __init__(self, be: FaissBackend, docs: DocStore, tmp: Path, trained_on: int, lexical: bool = False):
        self.be, self.docs, self.tmp = be, docs, tmp
        self.trained_on = trained_on
        self.next_iid = 0
        self.lexical_tokens: list | None = [] if lexical else None

    @property
    def needs_training(self) -> bool:
        return self.be.needs_training

    def train(self, vectors: np.ndarray) -> None:
        self.be.train(vectors)
        self.trained_on = int(vectors.shape[0])

    def add(self, docs: list, vectors: np.ndarray) -> None:
        iids = np.arange(self.next_iid, self.next_iid + len(docs), dtype=np.int64)
        self.docs.add(iids, docs)
        self.be.add(vectors, iids)
        self.next_iid += len(docs)
        if self.lexical_tokens is not None:
            from ..lexical import tokenize_many

            self.lexical_tokens += tokenize_many([d.text for d in docs])

    def finish(self) -> dict:
        self.docs.sync()
        self.be.save(self.tmp)
        desc = _describe(self.be, self.tmp, base_count=self.be.ntotal, trained_on=self.trained_on, segments=(),
                         base_id=uuid.uuid4().hex)
        if self.lexical_tokens is not None:
            from .lexical_part import LexicalPart

            part = LexicalPart.build(self.tmp, np.arange(self.next_iid, dtype=np.int64), self.lexical_tokens)
            desc["lexical"] = part.describe()
        return desc

    def abort(self) -> None:
        try:
            self.docs.close()
        except Exception:  # pragma: no cover
            pass


def _describe(be: FaissBackend, directory: Path, *, base_count: int, trained_on: int, segments,
              base_id: str) -> dict:
    """The base's manifest entry; ``directory`` holds the base just saved (for its bytes per vector)."""
    d = be.describe()
    d.update(base_count=int(base_count), trained_on=int(trained_on), base_id=base_id,
             segments=[s.describe() for s in segments], bytes_per_vector=be.bytes_per_vector(directory))
    inner_nlist = d.get("params", {}).get("nlist")
    if inner_nlist is None:
        nl = _nlist(be)
        if nl is not None:
            d["nlist"] = nl
    return d


def _nlist(be: FaissBackend):
    from .faiss_backend import _ivf

    ivf = _ivf(be.index)
    return None if ivf is None else int(ivf.nlist)
