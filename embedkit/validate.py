"""Input rules every write shares: ids and texts that UTF-8 can store, metadata that JSON (and SQLite's
JSON functions) can hold, finite vectors, sane chunk sizes. Each error names the value and the rule."""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError


def check_utf8(what: str, value: str) -> None:
    """A string that UTF-8 can encode (no lone surrogates such as ``"\\ud800"``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} contains a lone surrogate {value[e.start]!r} at position {e.start}, which "
                         "UTF-8 cannot encode; send valid Unicode text") from None


MAX_DEPTH = 32  # nesting of metadata objects and lists (SQLite's JSON functions stop at 1000)
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def check_metadata(doc_id, meta) -> None:
    """``meta``: None or an object of JSON values (strings, finite numbers, booleans, null, lists, objects)."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise InputError(f"document {doc_id!r}: metadata must be an object (a dict) or null, got "
                         f"{type(meta).__name__}")
    _check_value(doc_id, "", meta, 0)


def _check_value(doc_id, path: str, v, depth: int) -> None:
    where = f"document {doc_id!r}: metadata field {path!r}" if path else f"document {doc_id!r}: metadata"
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, str):
        check_utf8(where, v)
        return
    if isinstance(v, int):
        if not INT64_MIN <= v <= INT64_MAX:  # SQLite (filters) and orjson (answers) stop at 64 bits
            raise InputError(f"{where} is {v}, beyond the 64-bit integers ({INT64_MIN} .. {INT64_MAX}) that "
                             "metadata numbers can hold; store it as a string")
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InputError(f"{where} is {v!r}; metadata numbers must be finite (no NaN or infinity)")
        return
    if depth >= MAX_DEPTH:
        raise InputError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, dict):
        for key, item in v.items():
            if not isinstance(key, str):
                raise InputError(f"{where}: key {key!r} must be a string, got {type(key).__name__}")
            check_utf8(f"{where}: key", key)
            _check_value(doc_id, f"{path}.{key}" if path else key, item, depth + 1)
        return
    if isinstance(v, (list, tuple)):
        for i, item in enumerate(v):
            _check_value(doc_id, f"{path}[{i}]", item, depth + 1)
        return
    raise InputError(f"{where} is a {type(v).__name__}, which JSON cannot hold; metadata values must be "
                     "strings, finite numbers, booleans, null, lists or objects")


def check_finite_vectors(vectors: np.ndarray, ids) -> None:
    """Every vector finite (a NaN or infinite vector can never be found)."""
    ok = np.isfinite(vectors).all(axis=1) if vectors.ndim == 2 else np.isfinite(vectors)
    if not bool(np.all(ok)):
        row = int(np.flatnonzero(~ok)[0])
        ids = list(ids)
        who = f" (document {ids[row]!r})" if row < len(ids) else ""
        raise InputError(f"vector {row}{who} contains NaN or infinity; vectors must be finite; nothing was added")


def check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def ids_list(ids, what: str = "ids") -> list[str]:
    """One id (a string) or an iterable of string ids, as a list; anything else names the value."""
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, (bytes, bytearray)):
        raise InputError(f"{what}: got bytes {bytes(ids)!r}; ids are strings")
    try:
        out = list(ids)
    except TypeError:
        raise InputError(f"{what}: got {ids!r} ({type(ids).__name__}); give an id (a string) or a list of "
                         "string ids") from None
    for i in out:
        if not isinstance(i, str):
            raise InputError(f"{what}: id {i!r} is a {type(i).__name__}; ids are strings (use {str(i)!r})")
        check_utf8(f"{what}: id {i!r}", i)
    return out
