"""What searches return, and the shared rules for k and delete requests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


@dataclass
class Hit:
    id: str
    text: str
    score: float
    metadata: dict | None = None
    probability: float | None = None   # P(similar) from the index's calibration (dense scores only)
    match: bool | None = None          # calibrated P(similar) >= 0.5 (or the f1/accuracy cut it was fitted with)
    passage: dict | None = None        # the passage that scored, {"index", "start", "end", "text"}: for a
    #                                    document read as several passages (always with unit="passages")

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.probability is None:
            d.pop("probability")
            d.pop("match")
        if self.passage is None:
            d.pop("passage")
        return d


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_unit(unit, idx=None) -> str:
    """``documents`` or ``passages``; passages need an index built with them (``idx``)."""
    from ..constants import RESULT_UNITS

    if unit not in RESULT_UNITS:
        raise InputError(f"unit {unit!r} is not one of {', '.join(RESULT_UNITS)}")
    if unit == "passages" and idx is not None and not idx.has_passages:
        raise InputError(f"unit 'passages' needs an index built with passages; the index in {str(idx.directory)!r} "
                         "reads each document whole (split mode 'truncate'): rebuild it with "
                         "`embedkit index build ... --split passages --overwrite`")
    return unit


def lexical_documents(row: list[tuple]) -> list[tuple]:
    """Lexical rows (whole documents) with the passage bookkeeping removed from their metadata."""
    from .passages import is_document_row, user_metadata

    return [(s, i, t, user_metadata(m)) for s, i, t, m in row if is_document_row(i)]


def ids_to_delete(ids: Iterable[str] | str) -> list[str]:
    """Distinct ids, in order: one id (a string) or an iterable of string ids; an empty request is an error."""
    from ..validate import ids_list

    ids = list(dict.fromkeys(ids_list(ids, "delete")))
    if not ids:
        raise InputError("no ids to delete")
    return ids


def require_known(ids: list[str], found) -> None:
    """All-or-nothing deletes: an id missing from ``found`` rejects the whole request."""
    missing = [i for i in ids if i not in found]
    if missing:
        raise InputError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown id(s)); "
                         "nothing was deleted")
