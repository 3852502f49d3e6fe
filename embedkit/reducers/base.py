"""The reducer contract shared by every kind: a scikit-learn transformer (``__init__`` stores parameters,
``fit`` validates and sets attributes ending in ``_`` without touching a parameter) with a spec string
and JSON + ``.npz`` persistence (never pickle)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..errors import IndexFormatError, InputError, NotFittedError
from ..fsutil import atomic_save_npz, atomic_write_json, read_json

FORMAT = "embedkit-reducer"
FORMAT_VERSION = 1


def check_2d(X, what: str = "X") -> np.ndarray:
    """``X`` as a finite numeric 2-D array, or an InputError naming what is wrong."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (n_samples, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"{what} must be numeric, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return X


def format_number(v: float) -> str:
    """Shortest spelling of a spec parameter that parses back to the same float (0.5, 1, 0.25)."""
    short = f"{float(v):g}"
    return short if float(short) == float(v) else repr(float(v))


def _all_subclasses(cls) -> list:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _all_subclasses(sub)
    return out


class Reducer(TransformerMixin, BaseEstimator):
    """Base class of every reducer kind.

    Fitted attributes: ``n_features_in_``, ``n_components_`` (= :attr:`output_dim`), ``n_samples_fit_``.
    ``spec`` is the string :func:`embedkit.reducers.make_reducer` parses back into an equal reducer."""

    kind = "base"
    #: parameters written into ``spec`` after the dimension as ``name=value`` when not at their default
    spec_params: tuple[str, ...] = ()

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components

    # -- contract -----------------------------------------------------------------------------
    def _resolve_k(self, X: np.ndarray) -> int:
        """The output dimension for fitting data ``X`` (validated; never stored into a parameter)."""
        d = X.shape[1]
        k = d if self.n_components is None else self.n_components
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise InputError(f"n_components must be a positive integer, got {k!r}")
        if k > d:
            raise InputError(f"{self.kind}:{k} asks for more components than the vectors have "
                             f"dimensions ({d}); use k <= {d}")
        return int(k)

    def fit(self, X, y=None):
        X = check_2d(X)
        n, d = X.shape
        if n < self.min_samples:
            raise InputError(f"{self.spec} needs at least {self.min_samples} fitting vectors, got {n}")
        k = self._resolve_k(X)
        self._fit(X, k)
        self._set_fitted(n, d, k)
        return self

    min_samples = 2  # a covariance needs two rows; ``none`` fits on one

    def _set_fitted(self, n: int, d: int, k: int) -> None:
        self.n_features_in_ = int(d)
        self.n_components_ = int(k)
        self.n_samples_fit_ = int(n)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")

    def transform(self, X) -> np.ndarray:
        """Float32, C-contiguous ``(n, output_dim)`` (a 1-D ``X`` gives a 1-D result)."""
        self._check_fitted()
        X = np.asarray(X)
        single = X.ndim == 1
        X = check_2d(X[None, :] if single else X)
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted "
                             f"with {self.n_features_in_}")
        Y = np.ascontiguousarray(self._transform(X.astype(np.float32, copy=False)), dtype=np.float32)
        return Y[0] if single else Y

    @property
    def spec(self) -> str:
        parts = [self.kind] if self.n_components is None else [self.kind, str(self.n_components)]
        defaults = {k: v.default for k, v in _init_signature(type(self)).items()}
        extra = [f"{p}={format_number(getattr(self, p))}" for p in self.spec_params
                 if getattr(self, p) != defaults.get(p)]
        if extra:
            parts.append(",".join(extra))
        return ":".join(parts)

    def describe(self) -> dict:
        """What a manifest records about this reducer (``AutoReducer`` adds its grid and choice)."""
        return {"spec": self.spec}

    @property
    def output_dim(self) -> int:
        self._check_fitted()
        return self.n_components_

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, name: str = "reducer") -> None:
        """Write ``<name>.json`` (kind, parameters, fitted sizes) and ``<name>.npz`` (arrays), atomically."""
        self._check_fitted()
        directory = Path(directory)
        arrays = self._arrays()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": self.kind, "spec": self.spec,
                "params": self._params(), "n_features_in_": self.n_features_in_,
                "n_components_": self.n_components_, "n_samples_fit_": self.n_samples_fit_,
                "arrays": sorted(arrays), **self._extra_meta()}
        atomic_save_npz(directory / f"{name}.npz", **arrays)
        atomic_write_json(directory / f"{name}.json", meta)

    @staticmethod
    def load(directory: str | os.PathLike, name: str = "reducer") -> Reducer:
        """Read what :meth:`save` wrote; missing, corrupt or mismatched files are an IndexFormatError."""
        directory = Path(directory)
        jpath, npath = directory / f"{name}.json", directory / f"{name}.npz"
        meta = read_json(jpath, "reducer file")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            got = meta if not isinstance(meta, dict) else (meta.get("format"), meta.get("version"))
            raise IndexFormatError(f"{jpath} is not an embedkit reducer of version {FORMAT_VERSION} "
                                   f"(format, version = {got!r})")
        classes = {c.kind: c for c in _all_subclasses(Reducer)}
        cls = classes.get(meta.get("kind"))
        if cls is None:
            raise IndexFormatError(f"{jpath}: unknown reducer kind {meta.get('kind')!r}; known: "
                                   f"{', '.join(sorted(classes))}")
        try:
            obj = cls(**meta["params"])
        except (TypeError, KeyError) as e:
            raise IndexFormatError(f"{jpath}: bad reducer parameters {meta.get('params')!r} ({e})") from None
        try:
            with np.load(npath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise IndexFormatError(f"reducer file {npath} is missing") from None
        except Exception as e:  # noqa: BLE001  zipfile.BadZipFile, ValueError, EOFError, ...
            raise IndexFormatError(f"reducer file {npath} is corrupt: {e}") from None
        if sorted(arrays) != sorted(meta.get("arrays", [])):
            raise IndexFormatError(f"{npath} holds arrays {sorted(arrays)}, expected {meta.get('arrays')}")
        try:
            obj._set_state(meta, arrays)
            obj._set_fitted(meta["n_samples_fit_"], meta["n_features_in_"], meta["n_components_"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{jpath} is incomplete or inconsistent: {e!r}") from None
        return obj

    # -- per-kind hooks -----------------------------------------------------------------------
    def _params(self) -> dict:
        return self.get_params(deep=False)

    def _extra_meta(self) -> dict:
        return {}

    def _fit(self, X, k):  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _arrays(self) -> dict:
        return {}

    def _set_state(self, meta: dict, arrays: dict) -> None:
        pass


def _init_signature(cls) -> dict:
    return {k: v for k, v in inspect.signature(cls.__init__).parameters.items() if k != "self"}
