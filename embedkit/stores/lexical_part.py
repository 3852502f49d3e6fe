"""The lexical part of a FAISS store: Chinese BM25 beside the vectors, following adds and deletes.

The base's documents are indexed by :class:`embedkit.lexical.BM25Index` (bm25s scores, saved in the
generation's ``lexical/`` folder, immutable and hard-linked forward like the other base files).
Documents added by later commits (delta segments) are tokenised once and scored with the **base's
statistics** (document count, average length, document frequencies) by the same formula; deleted
documents are excluded. Compaction rebuilds the BM25 index over every live document, after which the
scores are exactly those of a fresh bm25s index. A deleted document never comes back from this side.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

DIR = "lexical"


class LexicalPart:
    def __init__(self, bm, *, stats: dict | None = None, seg_tokens: dict | None = None):
        self.bm = bm
        self._stats = stats
        self.seg_tokens: dict[int, list[str]] = dict(seg_tokens or {})

    @classmethod
    def build(cls, directory: Path, iids, texts_or_tokens) -> "LexicalPart":
        from ..lexical import BM25Index

        bm = BM25Index().fit(np.asarray(iids, dtype=np.int64), texts_or_tokens)
        bm.save(directory / DIR)
        return cls(bm)

    @classmethod
    def load(cls, generation: Path) -> "LexicalPart | None":
        if not (generation / DIR).is_dir():
            return None
        from ..lexical import BM25Index

        return cls(BM25Index.load(generation / DIR))

    def follow(self, seg_docs: dict) -> "LexicalPart":
        """The part for a newer snapshot: same base, tokens for its segment documents (cached)."""
        from ..lexical import tokenize

        toks = {i: self.seg_tokens[i] if i in self.seg_tokens else tokenize(doc[1]) for i, doc in seg_docs.items()}
        return LexicalPart(self.bm, stats=self._stats, seg_tokens=toks)

    @property
    def stats(self) -> dict:
        if self._stats is None:
            self._stats = self.bm.stats()
        return self._stats

    def search(self, queries: list[str], k: int, *, base_excluded: np.ndarray, base_allowed, seg_allowed) -> list:
        """Per query up to ``k`` ``(score, iid)``, best first, over live base and segment documents."""
        from ..lexical import tokenize

        base = self.bm.search(queries, k, allowed_ids=base_allowed, excluded_ids=base_excluded) \
            if (base_allowed is None or len(base_allowed)) else [[] for _ in queries]
        seg_iids = [i for i in self.seg_tokens if seg_allowed is None or i in seg_allowed]
        out = []
        for q, brow in zip(queries, base):
            row = list(brow)
            if seg_iids:
                scores = self.bm.score_with(self.stats, tokenize(q), [self.seg_tokens[i] for i in seg_iids])
                row += [(float(s), i) for s, i in zip(scores.tolist(), seg_iids) if s > 0]
                row.sort(key=lambda t: (-t[0], t[1]))
            out.append(row[:k])
        return out

    def compact(self, commit: Path, base_deleted: np.ndarray, added_iids, added_tokens) -> "LexicalPart":
        """A new base over every live document, written into ``commit`` (whose linked folder is replaced)."""
        target = commit / DIR
        if target.exists():
            shutil.rmtree(target)  # hard links to the previous base: removing them never touches it
        bm = _copy(self.bm)
        present = base_deleted[np.isin(base_deleted, bm.ids_)] if len(base_deleted) else base_deleted
        if len(present):
            bm.delete(present)
        if len(added_iids):
            bm.add(np.asarray(added_iids, dtype=np.int64), added_tokens)
        bm.save(target)
        return LexicalPart(bm)

    def check(self, base_iids: set[int]) -> list[str]:
        ids = set(self.bm.ids_.tolist())
        if ids != base_iids:
            odd = sorted(ids ^ base_iids)[:3]
            return [f"{DIR}/: the lexical index and the base disagree on {len(ids ^ base_iids)} internal id(s), "
                    f"e.g. {odd}"]
        return []

    def describe(self) -> dict:
        return {"tokenizer": getattr(self.bm, "tokenizer_", ""), "k1": self.bm.k1, "b": self.bm.b,
                "method": self.bm.method, "base_docs": len(self.bm)}


def _copy(bm):
    from ..lexical import BM25Index

    new = BM25Index(k1=bm.k1, b=bm.b, method=bm.method)
    new.tokenizer_ = bm.tokenizer_
    new.vocab_ = dict(bm.vocab_)
    new.ids_ = bm.ids_.copy()
    new._flat = bm._flat.copy()
    new._offsets = bm._offsets.copy()
    new._stale = True
    return new
