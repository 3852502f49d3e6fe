"""Dimension reducers fitted once and applied to documents and queries alike.

The BERT-whitening math (Su et al. 2021) is the two pure functions :func:`compute_kernel_bias` and
:func:`transform_and_normalize`; the estimator classes wrap them (and scikit-learn's
``GaussianRandomProjection`` for JL) in one ``fit / transform / save / load`` contract.  Learned
attributes end in ``_``; saved state is JSON + ``.npz`` (never pickle).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .constants import REDUCER_KINDS as KINDS
from .errors import IndexFormatError, InputError, NotFittedError
from .fsutil import atomic_save_npz, atomic_write_json, read_json

FORMAT = "embedkit-reducer"
FORMAT_VERSION = 1
RANK_TOL = 1e-10  # singular values below RANK_TOL * largest count as zero


# --------------------------------------------------------------------------------------------
# the math, as two small pure functions
# --------------------------------------------------------------------------------------------
def compute_kernel_bias(vecs: np.ndarray, n_components: int | None = None, *, whiten: bool = True):
    """Whitening kernel ``W[:, :k]`` and bias ``-mu`` such that ``(x + bias) @ W`` has zero mean and
    identity covariance on ``vecs``: ``U, S, _ = svd(cov)``, ``W = U diag(1/sqrt(S))``.
    With ``whiten=False`` the kernel is the PCA rotation ``U[:, :k]`` (no 1/sqrt(S) scaling)."""
    vecs = np.asarray(vecs, dtype=np.float64)
    mu = vecs.mean(axis=0, keepdims=True)
    cov = np.cov(vecs.T)
    u, s, _ = np.linalg.svd(np.atleast_2d(cov))
    k = vecs.shape[1] if n_components is None else n_components
    kernel = u[:, :k] / np.sqrt(s[:k]) if whiten else u[:, :k]
    return kernel, -mu, s


def transform_and_normalize(vecs: np.ndarray, kernel: np.ndarray | None = None,
                            bias: np.ndarray | None = None, normalize: bool = True) -> np.ndarray:
    """``y = (x + bias) @ kernel``, then L2-normalise each row (for cosine similarity)."""
    vecs = np.asarray(vecs)
    if kernel is not None:
        vecs = (vecs + bias) @ kernel
    if normalize:
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs


# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------
def _check_2d(X, what: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (n_samples, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"{what} must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return X


class Reducer:
    """Base class: ``__init__`` only stores parameters; ``fit`` validates and learns."""

    kind = "base"

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components

    # -- contract -----------------------------------------------------------------------------
    def fit(self, X, y=None):
        X = _check_2d(X)
        n, d = X.shape
        if n < 2:
            raise InputError(f"{self.spec} needs at least 2 fitting vectors, got {n}")
        k = d if self.n_components is None else self.n_components
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise InputError(f"n_components must be a positive integer, got {k!r}")
        if k > d:
            raise InputError(f"{self.kind}:{k} asks for more components than the vectors have "
                             f"dimensions ({d}); use k <= {d}")
        self._fit(X, int(k))
        self.n_features_in_ = d
        self.n_components_ = int(k)
        self.n_samples_fit_ = n
        return self

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")
        X = np.asarray(X)
        single = X.ndim == 1
        X = _check_2d(X[None, :] if single else X)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted "
                             f"with {self.n_features_in_}")
        Y = np.ascontiguousarray(self._transform(X.astype(np.float32, copy=False)), dtype=np.float32)
        return Y[0] if single else Y

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    @property
    def spec(self) -> str:
        return self.kind if self.n_components is None else f"{self.kind}:{self.n_components}"

    @property
    def output_dim(self) -> int:
        return self.n_components_

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, name: str = "reducer") -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"cannot save an unfitted {type(self).__name__}")
        directory = Path(directory)
        arrays = self._arrays()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": self.kind, "params": self._params(),
                "n_features_in_": self.n_features_in_, "n_components_": self.n_components_,
                "n_samples_fit_": self.n_samples_fit_, "arrays": sorted(arrays)}
        atomic_save_npz(directory / f"{name}.npz", **arrays)
        atomic_write_json(directory / f"{name}.json", meta)

    @staticmethod
    def load(directory: str | os.PathLike, name: str = "reducer") -> "Reducer":
        directory = Path(directory)
        jpath, npath = directory / f"{name}.json", directory / f"{name}.npz"
        meta = read_json(jpath, "reducer file")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise IndexFormatError(f"{jpath} is not an embedkit reducer of version {FORMAT_VERSION} "
                                   f"(format={meta.get('format')!r}, version={meta.get('version')!r})")
        cls = _CLASSES.get(meta.get("kind"))
        if cls is None:
            raise IndexFormatError(f"{jpath}: unknown reducer kind {meta.get('kind')!r}")
        obj = cls(**meta["params"])
        try:
            with np.load(npath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise IndexFormatError(f"reducer file {npath} is missing") from None
        except Exception as e:  # zipfile.BadZipFile, ValueError, ...
            raise IndexFormatError(f"reducer file {npath} is corrupt: {e}") from None
        if sorted(arrays) != sorted(meta.get("arrays", [])):
            raise IndexFormatError(f"{npath} holds arrays {sorted(arrays)}, expected {meta.get('arrays')}")
        obj._set_arrays(arrays)
        obj.n_features_in_ = int(meta["n_features_in_"])
        obj.n_components_ = int(meta["n_components_"])
        obj.n_samples_fit_ = int(meta["n_samples_fit_"])
        return obj

    # -- per-kind hooks -----------------------------------------------------------------------
    def _params(self) -> dict:
        return {"n_components": self.n_components}

    def _fit(self, X, k):  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _arrays(self) -> dict:
        return {}

    def _set_arrays(self, arrays: dict) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"


class IdentityReducer(Reducer):
    """``none``: vectors pass through unchanged."""

    kind = "none"

    def __init__(self, n_components: int | None = None):
        super().__init__(None)

    def _params(self):
        return {}

    def _fit(self, X, k):
        pass

    def _transform(self, X):
        return X


class WhiteningReducer(Reducer):
    """BERT-whitening: ``y = (x - mean_) @ components_`` with ``components_ = U[:, :k] diag(1/sqrt(S[:k]))``."""

    kind = "whitening"
    whiten = True

    def _fit(self, X, k):
        n = X.shape[0]
        if k > n - 1:
            raise InputError(f"{self.kind}:{k} needs more fitting vectors than components: the "
                             f"covariance of {n} vectors has rank at most {n - 1}; fit on at least "
                             f"{k + 1} vectors or use k <= {n - 1}")
        kernel, bias, s = compute_kernel_bias(X, k, whiten=self.whiten)
        rank = int((s > RANK_TOL * max(s[0], 1e-300)).sum())
        if rank < k:
            raise InputError(f"{self.kind}:{k}: the fitting vectors' covariance is rank-deficient "
                             f"(rank {rank} < k={k}); use k <= {rank} or fit on more varied texts")
        self.mean_ = (-bias[0]).astype(np.float32)
        self.components_ = kernel.astype(np.float32)
        self.singular_values_ = s[:k].astype(np.float32)

    def _transform(self, X):
        return (X - self.mean_) @ self.components_

    def _arrays(self):
        return {"mean_": self.mean_, "components_": self.components_,
                "singular_values_": self.singular_values_}

    def _set_arrays(self, a):
        self.mean_, self.components_, self.singular_values_ = a["mean_"], a["components_"], a["singular_values_"]


class PCAReducer(WhiteningReducer):
    """PCA rotation without the 1/sqrt(S) scaling: ``y = (x - mean_) @ U[:, :k]``."""

    kind = "pca"
    whiten = False


class JLReducer(Reducer):
    """Johnson-Lindenstrauss Gaussian random projection ``y = A x``, A ~ N(0, 1/k), seeded.

    Fitting draws A with scikit-learn's ``GaussianRandomProjection``; ``n_components='auto'`` picks
    :func:`jl_min_dim` for the fitting set's size and ``eps``."""

    kind = "jl"

    def __init__(self, n_components: int | str | None = None, eps: float = 0.1, random_state: int = 0):
        self.n_components = n_components
        self.eps = eps
        self.random_state = random_state

    @property
    def spec(self) -> str:
        return f"jl:{self.n_components}"

    def _params(self):
        return {"n_components": self.n_components, "eps": self.eps, "random_state": self.random_state}

    def fit(self, X, y=None):
        if self.n_components == "auto":
            X = _check_2d(X)
            k = jl_min_dim(X.shape[0], self.eps)
            if k > X.shape[1]:
                raise InputError(f"jl:auto needs {k} dimensions for {X.shape[0]} points at eps="
                                 f"{self.eps}, more than the vectors' {X.shape[1]}")
            saved, self.n_components = self.n_components, k
            try:
                return super().fit(X)
            finally:
                self.n_components = saved
        return super().fit(X)

    def _fit(self, X, k):
        from sklearn.random_projection import GaussianRandomProjection

        grp = GaussianRandomProjection(n_components=k, random_state=self.random_state).fit(X)
        self.components_ = np.ascontiguousarray(grp.components_, dtype=np.float32)  # (k, d)

    def _transform(self, X):
        return X @ self.components_.T

    def _arrays(self):
        return {"components_": self.components_}

    def _set_arrays(self, a):
        self.components_ = a["components_"]


_CLASSES = {c.kind: c for c in (IdentityReducer, WhiteningReducer, PCAReducer, JLReducer)}


def jl_min_dim(n_samples: int, eps: float = 0.1) -> int:
    """Smallest safe dimension for a JL projection of ``n_samples`` points with distortion ``eps``
    (scikit-learn's ``johnson_lindenstrauss_min_dim``: ``4 ln N / (eps^2/2 - eps^3/3)``)."""
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    if not 0 < eps < 1:
        raise InputError(f"eps must be in (0, 1), got {eps}")
    return int(johnson_lindenstrauss_min_dim(n_samples, eps=eps))


def make_reducer(spec: str | Reducer | None) -> Reducer:
    """Parse ``none``, ``whitening[:k]``, ``pca[:k]``, ``jl:k`` or ``jl:auto`` into an unfitted reducer."""
    if isinstance(spec, Reducer):
        return spec
    if spec is None:
        spec = "none"
    kind, _, arg = str(spec).strip().partition(":")
    kind = kind.lower()
    if kind not in _CLASSES:
        raise InputError(f"reducer {spec!r}: kind must be one of {', '.join(KINDS)} (e.g. whitening:256)")
    if kind == "none":
        if arg:
            raise InputError(f"reducer {spec!r}: 'none' takes no dimension")
        return IdentityReducer()
    if not arg:
        if kind == "jl":
            raise InputError(f"reducer {spec!r}: jl needs a dimension, e.g. jl:256 or jl:auto")
        return _CLASSES[kind]()
    if kind == "jl" and arg == "auto":
        return JLReducer("auto")
    try:
        k = int(arg)
    except ValueError:
        raise InputError(f"reducer {spec!r}: dimension {arg!r} is not an integer") from None
    if k <= 0:
        raise InputError(f"reducer {spec!r}: dimension must be positive, got {k}")
    return _CLASSES[kind](k)
