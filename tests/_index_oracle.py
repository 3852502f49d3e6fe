"""A plain in-memory model of an index and exact oracles for the property and fault tests.

The model is a dict ``id -> (text, metadata, vector)``; the oracles are written here, independently of
the engine: cosine top-k in numpy, BM25 (Lucene variant, as bm25s scores it) with the statistics of the
lexical base, the weighted min-max fusion, and the metadata filter rule of :mod:`embedkit.filters`.
Ranked results are compared tie-tolerantly: every hit's score must equal the oracle's score of that id,
the score list must equal the oracle's top-k scores, and every id scoring clearly above the k-th score
must be present (ids whose scores tie may come in any order)."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from embedkit.corpus import Doc
from embedkit.lexical import tokenize

from .conftest import FakeEncoder

DIM = 16
TOL = 2e-4
K1, B = 1.5, 0.75
WORDS = ("借呗", "花呗", "还款", "额度", "开通", "银行", "信用卡", "apple", "banana", "cherry", "提前", "逾期")


def scratch_dir(prefix: str) -> str:
    """A temporary directory on tmpfs when there is one (fsync there is free: these tests exercise the
    engine's logic, not the disk), else in the default temporary directory."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def unit_vector(text: str, dim: int = DIM) -> np.ndarray:
    v = FakeEncoder(dim).encode([text])[0].astype(np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def matches(flt: dict | None, meta) -> bool:
    """The documented filter rule: null matches null or missing; booleans only booleans; numbers by value."""
    if not flt:
        return True
    meta = meta if isinstance(meta, dict) else {}
    for key, want in flt.items():
        got = meta.get(key)
        if want is None:
            if got is not None:
                return False
        elif isinstance(want, bool) or isinstance(got, bool):
            if not (isinstance(want, bool) and isinstance(got, bool) and want == got):
                return False
        elif isinstance(want, str):
            if got != want:
                return False
        elif not isinstance(got, (int, float)) or got != want:
            return False
    return True


@dataclass
class LexicalStats:
    """BM25 corpus statistics of the lexical base (the live documents at its last compaction)."""
    n: int
    avgdl: float
    df: dict

    @classmethod
    def of(cls, texts) -> "LexicalStats":
        toks = [t for t in (tokenize(x) for x in texts) if t]
        df: dict[str, int] = {}
        for t in toks:
            for w in set(t):
                df[w] = df.get(w, 0) + 1
        return cls(len(toks), float(np.mean([len(t) for t in toks])) if toks else 0.0, df)

    def score(self, query_tokens: list[str], doc_tokens: list[str]) -> float:
        n, avg = max(1, self.n), self.avgdl or 1.0
        counts: dict[str, int] = {}
        for t in doc_tokens:
            counts[t] = counts.get(t, 0) + 1
        dl, s = len(doc_tokens), 0.0
        for t in query_tokens:  # with multiplicity, as bm25s scores a query
            if t and t in counts:
                df = self.df.get(t, 0)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * counts[t] / (counts[t] + K1 * (1 - B + B * dl / avg))
        return s


@dataclass
class Model:
    docs: dict = field(default_factory=dict)   # id -> (text, metadata, vector)
    lexical: LexicalStats | None = None        # None: no lexical part
    calibrated: bool = False

    def add(self, docs) -> None:
        for d in docs:
            assert d.id not in self.docs
            self.docs[d.id] = (d.text, d.metadata, unit_vector(d.text))

    def delete(self, ids) -> None:
        for i in ids:
            del self.docs[i]

    def compacted(self) -> None:
        """The lexical base was rebuilt over the live documents (a compaction or the lexical part added)."""
        if self.lexical is not None:
            self.lexical = LexicalStats.of(t for t, _, _ in self.docs.values())

    def as_docs(self) -> list[Doc]:
        return [Doc(i, t, m) for i, (t, m, _) in self.docs.items()]

    def snapshot(self) -> dict:
        return {i: (t, m) for i, (t, m, _) in self.docs.items()}

    # -- oracles ------------------------------------------------------------------------------------
    def dense(self, query: str, flt=None) -> dict:
        q = unit_vector(query)
        return {i: float(np.dot(v, q)) for i, (_, m, v) in self.docs.items() if matches(flt, m)}

    def bm25(self, query: str, flt=None) -> dict:
        qt = tokenize(query)
        out = {}
        for i, (t, m, _) in self.docs.items():
            if matches(flt, m):
                s = self.lexical.score(qt, tokenize(t))
                if s > 0:
                    out[i] = s
        return out

    def hybrid(self, query: str, flt, k: int, weight: float, depth: int = 50) -> dict | None:
        """The weighted fusion of the complete dense and lexical lists; None when it is not determined
        exactly (a list cut at ``depth``, or a score range so small that float noise decides)."""
        dense, lex = self.dense(query, flt), self.bm25(query, flt)
        if len(dense) > max(k, depth) or len(lex) > max(k, depth):
            return None
        out: dict = {}
        for scores, w in ((dense, weight), (lex, 1.0 - weight)):
            if not scores:
                continue
            lo, hi = min(scores.values()), max(scores.values())
            if 0 < hi - lo < 1e-2:
                return None
            for i, s in scores.items():
                out[i] = out.get(i, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        return out


def check_ranked(hits, oracle: dict, k: int, what: str, tol: float = TOL) -> None:
    """``hits`` ((id, score) best first) are the oracle's top-k, up to the order of tied scores."""
    ids = [h[0] for h in hits]
    assert len(ids) == len(set(ids)), f"{what}: an id returned twice: {ids}"
    assert len(hits) == min(k, len(oracle)), f"{what}: {len(hits)} hits, expected {min(k, len(oracle))}"
    for i, s in hits:
        assert i in oracle, f"{what}: {i!r} should not be returned (deleted, filtered out or not matching)"
        assert abs(s - oracle[i]) <= tol * max(1.0, abs(oracle[i])), f"{what}: {i!r} scored {s}, expected {oracle[i]}"
    want = sorted(oracle.values(), reverse=True)[:k]
    got = [s for _, s in hits]
    assert all(a >= b - tol for a, b in zip(got, got[1:])), f"{what}: not sorted: {got}"
    assert np.allclose(got, want, atol=tol, rtol=tol), f"{what}: scores {got}, expected {want}"
    if hits:
        kth = got[-1]
        missing = [i for i, s in oracle.items() if s > kth + tol * max(1.0, abs(kth)) and i not in ids]
        assert not missing, f"{what}: {missing} outrank the k-th hit but were not returned"


def recall(hits, oracle: dict, k: int) -> float:
    want = sorted(oracle.items(), key=lambda t: -t[1])[:k]
    if not want:
        return 1.0
    kth = want[-1][1]
    relevant = {i for i, s in oracle.items() if s >= kth - TOL}   # tied ids count either way
    return min(1.0, sum(h[0] in relevant for h in hits) / len(want))


def index_contents(idx) -> dict:
    """``id -> (text, metadata)`` of every live document, read from the store's files."""
    return {r[1]: (r[2], r[3]) for batch in idx.store.iterate() for r in batch}


class OracleModel(Model):
    """The model with the real query path's vectors instead of the fake encoder's."""

    def __init__(self, vector):
        super().__init__()
        self.vector = vector

    def add(self, docs) -> None:
        for d in docs:
            assert d.id not in self.docs, d.id
            self.docs[d.id] = (d.text, d.metadata, self.vector(d.text))

    def dense(self, query: str, flt=None) -> dict:
        q = self.vector(query)
        return {i: float(np.dot(v, q)) for i, (_, m, v) in self.docs.items() if matches(flt, m)}
