"""The fixed linear reducers: ``none``, β/γ-whitening (``whitening``, ``pca``) and JL random projection.

The BERT-whitening math (Su et al. 2021, and Su's β/γ follow-up) is three small pure functions:
:func:`moment_svd`, :func:`whitening_kernel` and :func:`compute_kernel_bias`, plus
:func:`transform_and_normalize`.  With ``μ`` the mean of the fitting vectors,

    Σ_β = (X − β·μ)ᵀ (X − β·μ) / (n − 1) = U Λ Uᵀ,      y = (x − β·μ) · U[:, :k] · Λ[:k]^(−γ/2)

* β = γ = 1 is BERT-whitening (``whitening:k``; Σ_1 is ``np.cov``);
* β = 1, γ = 0 is centred PCA, a rotation without scaling (``pca:k`` runs exactly this code);
* β = γ = 0 is the uncentred rotation onto the top-k right singular vectors of X (truncated SVD);
  at full k it changes no cosine.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Reducer

RANK_TOL = 1e-10  # singular values below RANK_TOL * largest count as zero


# --------------------------------------------------------------------------------------------
# the math, as small pure functions
# --------------------------------------------------------------------------------------------
def moment_svd(vecs: np.ndarray, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shift, U, S)``: ``shift = β·μ`` (1, d) and the SVD of the second moment around it,
    ``Σ_β = (X − shift)ᵀ(X − shift) / (n − 1)`` (for β = 1 exactly ``np.cov(X.T)``)."""
    vecs = np.asarray(vecs, dtype=np.float64)
    shift = beta * vecs.mean(axis=0, keepdims=True)
    c = vecs - shift
    cov = np.atleast_2d(c.T @ c / (len(vecs) - 1))
    u, s, _ = np.linalg.svd(cov)
    return shift, u, s


def whitening_kernel(u: np.ndarray, s: np.ndarray, k: int, gamma: float = 1.0) -> np.ndarray:
    """``U[:, :k] · diag(S[:k]^(−γ/2))`` (γ = 0: the rotation ``U[:, :k]`` itself)."""
    if gamma == 0:
        return u[:, :k].copy()
    return u[:, :k] * s[:k] ** (-gamma / 2)


def compute_kernel_bias(vecs: np.ndarray, n_components: int | None = None, *, whiten: bool = True,
                        beta: float = 1.0, gamma: float | None = None):
    """Kernel ``W`` (d, k), bias ``−β·μ`` (1, d) and all singular values ``S`` such that
    ``(x + bias) @ W`` is the β/γ-whitened ``x``.  ``gamma`` defaults to 1 (``whiten=True``: zero mean,
    identity covariance on ``vecs``) or 0 (``whiten=False``: the PCA rotation)."""
    gamma = (1.0 if whiten else 0.0) if gamma is None else float(gamma)
    shift, u, s = moment_svd(vecs, beta)
    k = u.shape[0] if n_components is None else n_components
    return whitening_kernel(u, s, k, gamma), -shift, s


def transform_and_normalize(vecs: np.ndarray, kernel: np.ndarray | None = None,
                            bias: np.ndarray | None = None, normalize: bool = True) -> np.ndarray:
    """``y = (x + bias) @ kernel``, then L2-normalise each row (for cosine similarity)."""
    vecs = np.asarray(vecs)
    if kernel is not None:
        vecs = (vecs + bias) @ kernel
    if normalize:
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs


def _check_unit(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= v <= 1:
        raise InputError(f"{name} must be a number in [0, 1], got {v!r}")
    return float(v)


# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------
class IdentityReducer(Reducer):
    """``none``: vectors pass through unchanged."""

    kind = "none"
    n_components = None
    min_samples = 1

    def __init__(self):
        pass

    def _fit(self, X, k):
        pass

    def _transform(self, X):
        return X


class WhiteningReducer(Reducer):
    """β/γ-whitening ``y = (x − mean_) @ components_``: ``mean_ = β·μ``,
    ``components_ = U[:, :k] · diag(S[:k]^(−γ/2))``; the defaults β = γ = 1 are BERT-whitening.

    Spec: ``whitening[:k][:beta=B,gamma=G]`` (β, γ in [0, 1]; left out of the spec at 1)."""

    kind = "whitening"
    spec_params = ("beta", "gamma")

    def __init__(self, n_components: int | None = None, beta: float = 1.0, gamma: float = 1.0):
        self.n_components = n_components
        self.beta = beta
        self.gamma = gamma

    def _fit(self, X, k):
        beta = _check_unit("beta", self.beta)
        _check_unit("gamma", self.gamma)
        self._check_rank_bound(X.shape[0], k, beta)
        self._fit_svd(*moment_svd(X, beta), k)

    def _check_rank_bound(self, n: int, k: int, beta: float) -> None:
        max_rank = n - 1 if beta == 1 else n  # centring removes one degree of freedom
        if k > max_rank:
            raise InputError(f"{self.spec} needs more fitting vectors than components: the second "
                             f"moment of {n} vectors has rank at most {max_rank}; fit on at least "
                             f"{k + n - max_rank} vectors or use k <= {max_rank}")

    def _fit_svd(self, shift: np.ndarray, u: np.ndarray, s: np.ndarray, k: int) -> None:
        """Set the fitted arrays from :func:`moment_svd`'s output (AutoReducer reuses one SVD per β)."""
        rank = int((s > RANK_TOL * max(s[0], 1e-300)).sum())
        if rank < k:
            raise InputError(f"{self.spec}: the fitting vectors' covariance is rank-deficient "
                             f"(rank {rank} < k={k}); use k <= {rank} or fit on more varied texts")
        self.mean_ = shift[0].astype(np.float32)
        self.components_ = whitening_kernel(u, s, k, float(self.gamma)).astype(np.float32)
        self.singular_values_ = s[:k].astype(np.float32)

    def _transform(self, X):
        return (X - self.mean_) @ self.components_

    def _arrays(self):
        return {"mean_": self.mean_, "components_": self.components_,
                "singular_values_": self.singular_values_}

    def _set_state(self, meta, a):
        self.mean_, self.components_, self.singular_values_ = a["mean_"], a["components_"], a["singular_values_"]


class PCAReducer(WhiteningReducer):
    """Centred PCA rotation without scaling, ``y = (x − μ) @ U[:, :k]``: β/γ-whitening with β = 1, γ = 0
    (the same code path, so ``pca:k`` and ``whitening:k:beta=1,gamma=0`` give identical arrays)."""

    kind = "pca"
    spec_params = ()
    beta = 1.0
    gamma = 0.0

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components


class JLReducer(Reducer):
    """Johnson-Lindenstrauss Gaussian random projection ``y = A x``, A ~ N(0, 1/k), seeded, drawn by
    scikit-learn's ``GaussianRandomProjection``.  ``n_components='auto'`` lets it pick the smallest safe
    dimension for the fitting set's size and ``eps`` (:func:`jl_min_dim`)."""

    kind = "jl"

    def __init__(self, n_components: int | str | None = None, eps: float = 0.1, random_state: int = 0):
        self.n_components = n_components
        self.eps = eps
        self.random_state = random_state

    def _resolve_k(self, X):
        if self.n_components != "auto":
            return super()._resolve_k(X)
        n, d = X.shape
        k = jl_min_dim(n, self.eps)
        if k > d:
            raise InputError(f"jl:auto needs {k} dimensions for {n} points at eps={self.eps}, more "
                             f"than the vectors' {d}; use a larger eps or jl:k with k <= {d}")
        return k

    def _fit(self, X, k):
        from sklearn.random_projection import GaussianRandomProjection

        grp = GaussianRandomProjection(n_components="auto" if self.n_components == "auto" else k,
                                       eps=self.eps, random_state=self.random_state).fit(X)
        self.components_ = np.ascontiguousarray(grp.components_, dtype=np.float32)  # (k, d)

    def _transform(self, X):
        return X @ self.components_.T

    def _arrays(self):
        return {"components_": self.components_}

    def _set_state(self, meta, a):
        self.components_ = a["components_"]


def jl_min_dim(n_samples: int, eps: float = 0.1) -> int:
    """Smallest safe dimension for a JL projection of ``n_samples`` points with distortion ``eps``
    (scikit-learn's ``johnson_lindenstrauss_min_dim``: ``4 ln N / (eps^2/2 - eps^3/3)``)."""
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    if not 0 < eps < 1:
        raise InputError(f"eps must be in (0, 1), got {eps}")
    return int(johnson_lindenstrauss_min_dim(n_samples, eps=eps))
