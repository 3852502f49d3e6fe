"""Fusing a dense and a lexical result list: reciprocal-rank fusion and a weighted sum of per-query
min-max-normalised scores, plus a tuner that picks the weight on labelled pairs.

A result list is one query's hits, best first, as ``(score, id)`` pairs (what ``EmbedIndex.search``'s
backends and :class:`embedkit.lexical.BM25Index` return).  Batch functions take one list per query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InputError

DEFAULT_RRF_K = 60
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))

Hits = Sequence[tuple[float, object]]


def _check_top_k(top_k) -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0):
        raise InputError(f"top_k must be a positive integer or None, got {top_k!r}")


def _ranked(scores: dict, top_k) -> list[tuple[float, object]]:
    # sort by score, ties by first appearance (dict order: dense hits before lexical ones)
    order = sorted(enumerate(scores.items()), key=lambda t: (-t[1][1], t[0]))
    out = [(float(s), i) for _, (i, s) in order]
    return out if top_k is None else out[:top_k]


def rrf(result_lists: Sequence[Hits], *, k: int = DEFAULT_RRF_K, top_k: int | None = None,
        weights: Sequence[float] | None = None) -> list[tuple[float, object]]:
    """Reciprocal-rank fusion of one query's result lists: ``score(d) = sum_i w_i / (k + rank_i(d))``
    with ranks starting at 1 (Cormack et al. 2009; ``k=60``).  Scores of the inputs are ignored."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 0:
        raise InputError(f"RRF k must be a number >= 0, got {k!r}")
    _check_top_k(top_k)
    weights = [1.0] * len(result_lists) if weights is None else list(weights)
    if len(weights) != len(result_lists):
        raise InputError(f"got {len(weights)} weights for {len(result_lists)} result lists")
    fused: dict = {}
    for w, hits in zip(weights, result_lists):
        seen = set()
        for rank, (_, doc) in enumerate(hits, 1):
            if doc in seen:
                continue
            seen.add(doc)
            fused[doc] = fused.get(doc, 0.0) + w / (k + rank)
    return _ranked(fused, top_k)


def minmax(hits: Hits) -> dict:
    """``{id: (score - min) / (max - min)}`` over one result list; all 1.0 when every score is equal."""
    if not hits:
        return {}
    s = np.asarray([h[0] for h in hits], dtype=np.float64)
    lo, hi = float(s.min()), float(s.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"scores must be finite, got min {lo!r} and max {hi!r}")
    norm = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    out: dict = {}
    for (_, doc), v in zip(hits, norm.tolist()):
        out.setdefault(doc, v)
    return out


def check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)) \
            or not 0.0 <= float(weight) <= 1.0:
        raise InputError(f"fusion weight must be a number in [0, 1] (the dense share), got {weight!r}")
    return float(weight)


def weighted(dense: Hits, lexical: Hits, weight: float, *, top_k: int | None = None) -> list[tuple[float, object]]:
    """``weight * minmax(dense) + (1 - weight) * minmax(lexical)`` for one query; a document missing
    from one list gets 0 from it.  Each list is normalised over its own hits."""
    w = check_weight(weight)
    _check_top_k(top_k)
    nd, nl = minmax(dense), minmax(lexical)
    fused = {doc: w * v for doc, v in nd.items()}
    for doc, v in nl.items():
        fused[doc] = fused.get(doc, 0.0) + (1.0 - w) * v
    return _ranked(fused, top_k)


def _check_batch(dense, lexical) -> None:
    if len(dense) != len(lexical):
        raise InputError(f"got dense results for {len(dense)} queries and lexical results for {len(lexical)}")


def fuse(dense: Sequence[Hits], lexical: Sequence[Hits], *, method: str = "weighted", weight: float = 0.5,
         rrf_k: int = DEFAULT_RRF_K, top_k: int | None = None) -> list[list[tuple[float, object]]]:
    """Fuse per-query dense and lexical results: ``method`` ``"weighted"`` (dense share ``weight``)
    or ``"rrf"`` (``rrf_k``)."""
    _check_batch(dense, lexical)
    if method == "rrf":
        return [rrf([d, lx], k=rrf_k, top_k=top_k) for d, lx in zip(dense, lexical)]
    if method == "weighted":
        return [weighted(d, lx, weight, top_k=top_k) for d, lx in zip(dense, lexical)]
    raise InputError(f"fusion method {method!r} is not one of weighted, rrf")


def tune_weight(dense: Sequence[Hits], lexical: Sequence[Hits], relevant: Sequence, *,
                grid: Sequence[float] = WEIGHT_GRID, metric: str = "mrr@10") -> dict:
    """Pick the dense weight that maximises ``metric`` (a key of
    :func:`embedkit.evaluation.retrieval.ir_metrics`) on labelled queries.

    ``relevant[q]``: the ids relevant to query ``q``.  Ties go to the larger weight (closer to plain
    dense search).  Returns ``{"weight", "metric", "score", "grid": [{"weight", "score"}, ...]}``."""
    from .evaluation.retrieval import ir_metrics

    _check_batch(dense, lexical)
    if len(relevant) != len(dense):
        raise InputError(f"got relevance labels for {len(relevant)} queries and results for {len(dense)}")
    if not len(dense):
        raise InputError("tuning the fusion weight needs at least one labelled query")
    grid = [check_weight(w) for w in grid]
    if not grid:
        raise InputError("the weight grid is empty")
    rows = []
    for w in grid:
        fused = fuse(dense, lexical, weight=w, top_k=10)
        score = ir_metrics([[doc for _, doc in hits] for hits in fused], relevant)[metric]
        rows.append({"weight": w, "score": score})
    best = max(rows, key=lambda r: (r["score"], r["weight"]))
    return {"weight": best["weight"], "metric": metric, "score": best["score"], "grid": rows}
