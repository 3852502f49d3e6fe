"""``auto[:k]``: choose the reducer on labelled pairs instead of guessing.

Whitening helps raw pretrained encoders and hurts sentence-trained ones, so Su recommends choosing
β, γ and k on a validation split.  :class:`AutoReducer` fits every candidate of the grid

    none,  and  β/γ-whitening for β, γ ∈ {0, 0.5, 1} × k ∈ {64, 128, 256, full}
    (β = γ = 1 is ``whitening:k``, β = 1, γ = 0 is ``pca:k``)

on the corpus vectors ``X``, scores each by the Spearman correlation (``scipy.stats.spearmanr``)
of the cosine of the tuning pairs against their labels, and keeps the best one -- already fitted on
``X``.  Within ``tie_tol`` of the best, the smallest output dimension wins (then grid order: none,
whitening, pca, the rest).  Only the tuning pairs are ever scored: pass a validation split, never test.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import IndexFormatError, InputError
from .base import Reducer, check_2d
from .linear import IdentityReducer, PCAReducer, WhiteningReducer, moment_svd

DEFAULT_BETAS = (0.0, 0.5, 1.0)
DEFAULT_GAMMAS = (0.0, 0.5, 1.0)
DEFAULT_KS = (64, 128, 256)  # plus the full input dimension
_CANDIDATE_CLASSES = {c.kind: c for c in (IdentityReducer, WhiteningReducer, PCAReducer)}

NO_TUNING_PAIRS = (
    "reducer 'auto' chooses among none / pca / whitening / beta,gamma-whitening by Spearman on "
    "labelled pairs, and none were given: pass --tune-pairs FILE (lines sentence1<TAB>sentence2<TAB>label) "
    "when building an index, run `embedkit eval --reducers auto` (it tunes on each task's valid split), "
    "or in Python call AutoReducer().fit(X, tune=(vectors1, vectors2, labels))")


def candidate(k: int | None, beta: float, gamma: float) -> Reducer:
    """The unfitted reducer for one grid point, under its canonical name (whitening:k, pca:k, ...)."""
    if (beta, gamma) == (1.0, 1.0):
        return WhiteningReducer(k)
    if (beta, gamma) == (1.0, 0.0):
        return PCAReducer(k)
    return WhiteningReducer(k, beta=beta, gamma=gamma)


def pair_spearman(reducer: Reducer, a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> float:
    """Spearman of ``cos(reducer(a), reducer(b))`` against ``labels`` (nan if either side is constant)."""
    from scipy.stats import spearmanr

    ya, yb = reducer.transform(a).astype(np.float64), reducer.transform(b).astype(np.float64)
    na = np.maximum(np.linalg.norm(ya, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(yb, axis=1), 1e-12)
    sims = np.einsum("ij,ij->i", ya, yb) / (na * nb)
    if np.all(sims == sims[0]) or np.all(labels == labels[0]):
        return math.nan
    return float(spearmanr(sims, labels).statistic)


class AutoReducer(Reducer):
    """Chooses and fits the best reducer of a grid on labelled tuning pairs.

    ``AutoReducer(k=None).fit(X, tune=(vectors1, vectors2, labels))``: ``X`` is what the chosen reducer
    is fitted on (the corpus); ``vectors1[i]``, ``vectors2[i]`` are the raw (un-reduced) vectors of
    tuning pair ``i`` and ``labels[i]`` its gold score (0/1 or graded).  ``n_components=k`` caps the
    output dimension: candidates have k' <= k (k itself included), and ``none`` only when k >= d.

    Fitted attributes: ``reducer_`` (the chosen reducer, fitted on ``X``), ``choice_`` (its spec),
    ``grid_`` (one dict per candidate: spec, k, beta, gamma, spearman, error), ``n_tune_pairs_``, plus
    the usual ``n_features_in_`` / ``n_components_`` / ``n_samples_fit_``."""

    kind = "auto"

    def __init__(self, n_components: int | None = None, betas=DEFAULT_BETAS, gammas=DEFAULT_GAMMAS,
                 ks=DEFAULT_KS, tie_tol: float = 1e-6):
        self.n_components = n_components
        self.betas = betas
        self.gammas = gammas
        self.ks = ks
        self.tie_tol = tie_tol

    # -- the grid -----------------------------------------------------------------------------
    def candidates(self, d: int) -> list[tuple[Reducer, int, float | None, float | None]]:
        """``(unfitted reducer, output dim, beta, gamma)`` in grid order for ``d``-dimensional input."""
        cap = d if self.n_components is None else int(self.n_components)
        dims = sorted({int(k) for k in self.ks if 0 < int(k) < min(cap, d)} | {min(cap, d)})
        out: list = [(IdentityReducer(), d, None, None)] if cap >= d else []
        order = [(1.0, 1.0), (1.0, 0.0)] + [(float(b), float(g)) for b in self.betas for g in self.gammas
                                            if (float(b), float(g)) not in ((1.0, 1.0), (1.0, 0.0))]
        allowed = {(float(b), float(g)) for b in self.betas for g in self.gammas}
        for k in dims:
            for beta, gamma in order:
                if (beta, gamma) in allowed:
                    out.append((candidate(None if k == d else k, beta, gamma), k, beta, gamma))
        return out

    def _resolve_k(self, X):
        d = X.shape[1]
        k = self.n_components
        if k is not None and (not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0):
            raise InputError(f"auto:k needs a positive integer k, got {k!r}")
        if k is not None and k > d:
            raise InputError(f"auto:{k} asks for more components than the vectors have dimensions "
                             f"({d}); use k <= {d}")
        return d if k is None else int(k)

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, X, y=None, *, tune=None):
        if tune is None:
            raise InputError(NO_TUNING_PAIRS)
        X = check_2d(X)
        n, d = X.shape
        if n < 2:
            raise InputError(f"{self.spec} needs at least 2 fitting vectors, got {n}")
        self._resolve_k(X)
        a, b, labels = self._check_tune(tune, d)
        grid, fitted = [], []
        svd_cache: dict[float, tuple] = {}
        for red, k, beta, gamma in self.candidates(d):
            row = {"spec": red.spec, "k": k, "beta": beta, "gamma": gamma, "spearman": math.nan, "error": None}
            try:
                if beta is None:
                    red.fit(X)
                else:
                    if beta not in svd_cache:
                        svd_cache[beta] = moment_svd(X, beta)
                    red._check_rank_bound(n, k, beta)
                    red._fit_svd(*svd_cache[beta], k)
                    red._set_fitted(n, d, k)
                row["spearman"] = pair_spearman(red, a, b, labels)
            except InputError as e:
                row["error"] = str(e)
            grid.append(row)
            fitted.append(red)
        ok = [i for i, r in enumerate(grid) if math.isfinite(r["spearman"])]
        if not ok:
            errors = sorted({r["error"] for r in grid if r["error"]})
            raise InputError(f"{self.spec}: no candidate could be scored on the {len(labels)} tuning pairs"
                             + (f" ({'; '.join(errors[:3])})" if errors else
                                " (every candidate gave constant similarities)"))
        best = max(grid[i]["spearman"] for i in ok)
        tied = [i for i in ok if grid[i]["spearman"] >= best - self.tie_tol]
        pick = min(tied, key=lambda i: (grid[i]["k"], i))
        self.grid_ = grid
        self.reducer_ = fitted[pick]
        self.choice_ = grid[pick]["spec"]
        self.n_tune_pairs_ = len(labels)
        self._set_fitted(n, d, self.reducer_.n_components_)
        return self

    @staticmethod
    def _check_tune(tune, d: int):
        try:
            a, b, labels = tune
        except (TypeError, ValueError):
            raise InputError("tune must be a tuple (vectors1, vectors2, labels)") from None
        a, b = check_2d(a, "tuning vectors1"), check_2d(b, "tuning vectors2")
        labels = np.asarray(labels, dtype=np.float64).ravel()
        if a.shape != b.shape or len(labels) != len(a):
            raise InputError(f"tuning pairs: vectors1 {a.shape}, vectors2 {b.shape} and {len(labels)} labels "
                             "must describe the same number of pairs")
        if a.shape[1] != d:
            raise InputError(f"tuning vectors have {a.shape[1]} features, the fitting vectors {d}")
        if len(labels) < 3 or not np.isfinite(labels).all() or np.all(labels == labels[0]):
            raise InputError(f"tuning pairs need at least 3 finite labels that are not all equal; got "
                             f"{len(labels)} pairs with labels {sorted(set(labels.tolist()))[:5]}")
        return a, b, labels

    # -- use ----------------------------------------------------------------------------------
    def _transform(self, X):
        return self.reducer_._transform(X)

    def describe(self) -> dict:
        """What the manifest and the report record: the spec, the choice and the whole grid."""
        self._check_fitted()
        return {"spec": self.spec, "choice": self.choice_, "n_tune_pairs": self.n_tune_pairs_,
                "grid": [dict(r) for r in self.grid_]}

    def _arrays(self):
        return self.reducer_._arrays()

    def _extra_meta(self):
        return {"choice": {"kind": self.reducer_.kind, "params": self.reducer_._params(), "spec": self.choice_},
                "grid": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in r.items()} for r in self.grid_],
                "n_tune_pairs": self.n_tune_pairs_}

    def _set_state(self, meta, arrays):
        choice = meta["choice"]
        cls = _CANDIDATE_CLASSES.get(choice["kind"])
        if cls is None:
            raise IndexFormatError(f"auto reducer: unknown chosen kind {choice['kind']!r}")
        red = cls(**choice["params"])
        red._set_state(choice, arrays)
        red._set_fitted(meta["n_samples_fit_"], meta["n_features_in_"], meta["n_components_"])
        self.reducer_ = red
        self.choice_ = choice["spec"]
        self.grid_ = [{k: (math.nan if k == "spearman" and v is None else v) for k, v in r.items()}
                      for r in meta["grid"]]
        self.n_tune_pairs_ = int(meta["n_tune_pairs"])
