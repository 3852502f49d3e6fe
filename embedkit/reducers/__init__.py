"""Dimension reducers fitted once and applied to documents and queries alike.

Every reducer is a scikit-learn transformer (``get_params`` / ``clone`` / ``Pipeline`` work) with a spec
string, ``fit / transform / save / load`` (JSON + ``.npz``, never pickle) and ``output_dim``:

=====================================  =============================================================
spec                                   what
=====================================  =============================================================
``none``                               vectors unchanged (:class:`IdentityReducer`)
``whitening[:k]``                      BERT-whitening (:class:`WhiteningReducer`, β = γ = 1)
``whitening[:k]:beta=B,gamma=G``       Su's β/γ-whitening ``(x − β·μ) · U · Λ^(−γ/2)``, β, γ ∈ [0, 1]
``pca[:k]``                            centred PCA rotation (:class:`PCAReducer`, = β 1, γ 0)
``jl:k`` / ``jl:auto``                 Gaussian random projection (:class:`JLReducer`)
``auto[:k]``                           chosen on labelled pairs (:class:`AutoReducer`)
=====================================  =============================================================

``make_reducer(spec)`` parses a spec into an unfitted reducer; ``Reducer.load(dir)`` reads any kind.
"""

from __future__ import annotations

from ..constants import REDUCER_KINDS as KINDS
from ..errors import InputError
from .auto import NO_TUNING_PAIRS, AutoReducer, pair_spearman
from .base import FORMAT, FORMAT_VERSION, Reducer, check_2d
from .linear import (
    IdentityReducer,
    JLReducer,
    PCAReducer,
    WhiteningReducer,
    compute_kernel_bias,
    jl_min_dim,
    moment_svd,
    transform_and_normalize,
    whitening_kernel,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "KINDS", "NO_TUNING_PAIRS", "AutoReducer", "IdentityReducer",
           "JLReducer", "PCAReducer", "Reducer", "WhiteningReducer", "check_2d", "compute_kernel_bias",
           "jl_min_dim", "make_reducer", "moment_svd", "pair_spearman", "transform_and_normalize",
           "whitening_kernel"]

_CLASSES = {c.kind: c for c in (IdentityReducer, WhiteningReducer, PCAReducer, JLReducer, AutoReducer)}
assert tuple(_CLASSES) == KINDS, (tuple(_CLASSES), KINDS)


def _parse_params(spec: str, kind: str, text: str) -> dict:
    allowed = _CLASSES[kind].spec_params
    out: dict = {}
    for item in text.split(","):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            raise InputError(f"reducer {spec!r}: parameter {item!r} is not name=value")
        if name not in allowed:
            hint = (f"{kind} takes {', '.join(allowed)}" if allowed else f"{kind} takes no parameters")
            raise InputError(f"reducer {spec!r}: unknown parameter {name!r} ({hint}; e.g. "
                             "whitening:256:beta=0.5,gamma=0.5)")
        if name in out:
            raise InputError(f"reducer {spec!r}: parameter {name!r} given twice")
        try:
            v = float(value)
        except ValueError:
            raise InputError(f"reducer {spec!r}: {name}={value!r} is not a number") from None
        if not 0 <= v <= 1:
            raise InputError(f"reducer {spec!r}: {name}={value} must be in [0, 1]")
        out[name] = v
    return out


def make_reducer(spec: str | Reducer | None) -> Reducer:
    """Parse ``kind[:k][:name=value,...]`` into an unfitted reducer (a Reducer passes through).

    Kinds: ``none``, ``whitening[:k][:beta=B,gamma=G]``, ``pca[:k]``, ``jl:k``, ``jl:auto``, ``auto[:k]``."""
    if isinstance(spec, Reducer):
        return spec
    if spec is None:
        spec = "none"
    spec = str(spec).strip()
    kind, *parts = spec.split(":")
    kind = kind.lower()
    if kind not in _CLASSES:
        raise InputError(f"reducer {spec!r}: kind must be one of {', '.join(KINDS)} (e.g. whitening:256)")
    arg, params = "", {}
    for part in parts:
        if "=" in part:
            if params:
                raise InputError(f"reducer {spec!r}: give parameters once, comma-separated (beta=B,gamma=G)")
            params = _parse_params(spec, kind, part)
        elif arg or params:
            raise InputError(f"reducer {spec!r}: expected kind[:k][:name=value,...]")
        else:
            arg = part.strip()
            if not arg:
                raise InputError(f"reducer {spec!r}: empty dimension")
    if kind == "none":
        if arg or params:
            raise InputError(f"reducer {spec!r}: 'none' takes no dimension")
        return IdentityReducer()
    if not arg:
        if kind == "jl":
            raise InputError(f"reducer {spec!r}: jl needs a dimension, e.g. jl:256 or jl:auto")
        return _CLASSES[kind](**params)
    if kind == "jl" and arg == "auto":
        return JLReducer("auto")
    try:
        k = int(arg)
    except ValueError:
        raise InputError(f"reducer {spec!r}: dimension {arg!r} is not an integer") from None
    if k <= 0:
        raise InputError(f"reducer {spec!r}: dimension must be positive, got {k}")
    return _CLASSES[kind](k, **params)
