"""STS metrics: cosine similarity of each pair against its gold label, as Spearman (the headline) and
Pearson correlation.  Correlations are returned as fractions in [-1, 1]; reports multiply by 100."""

from __future__ import annotations

import math

import numpy as np

from ..encoder import l2_normalize
from ..errors import InputError


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"correlation needs two sequences of equal length, got {x.size} and {y.size}")
    if x.size < 2:
        raise InputError(f"correlation needs at least 2 pairs, got {x.size}")
    return x, y


def _constant(v: np.ndarray) -> bool:
    return bool(np.all(v == v[0]))


def spearman(x, y) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``, average ranks for ties); ``nan`` if either
    side is constant."""
    from scipy.stats import spearmanr

    x, y = _check_pair(x, y)
    if _constant(x) or _constant(y):
        return math.nan
    return float(spearmanr(x, y).statistic)


def pearson(x, y) -> float:
    """Pearson correlation (``scipy.stats.pearsonr``); ``nan`` if either side is constant."""
    from scipy.stats import pearsonr

    x, y = _check_pair(x, y)
    if _constant(x) or _constant(y):
        return math.nan
    return float(pearsonr(x, y).statistic)


def cosine_scores(a: np.ndarray, b: np.ndarray, *, normalized: bool = False) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays (``normalized=True``: rows already unit length)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"cosine_scores needs two (n, d) arrays of the same shape, got {a.shape} and {b.shape}")
    if not normalized:
        a, b = l2_normalize(a), l2_normalize(b)
    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def sts_scores(sims, labels) -> dict:
    """``{"spearman", "pearson", "n_pairs"}`` of similarity scores against gold labels."""
    sims, labels = _check_pair(sims, labels)
    return {"spearman": spearman(sims, labels), "pearson": pearson(sims, labels), "n_pairs": int(sims.size)}


def task_averages(values, weights) -> dict:
    """Plain and size-weighted mean of per-task values (``nan`` entries are left out of both)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return {"avg": math.nan, "w_avg": math.nan}
    return {"avg": float(v[ok].mean()), "w_avg": float(np.average(v[ok], weights=w[ok]))}
