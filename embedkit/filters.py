"""Metadata filters: one object, validated once, rendered for every store.

A filter is a non-empty mapping ``{field: value}``; a document matches when, for every field, its
metadata value equals ``value``. The rule, the same in every store:

* strings match equal strings; numbers match equal numbers (``1`` matches ``1.0``); booleans match
  only booleans (``true`` never matches ``1``);
* ``null`` matches a field that is null **or missing** (a document without metadata included),
  because Milvus cannot tell the two apart and one rule must hold everywhere;
* field names are plain names: letters, digits, ``_`` and ``-``, not starting with a digit or ``-``.

:meth:`Filter.matches` evaluates it in Python (delta segments), :meth:`Filter.to_sql` renders it for
SQLite's JSON functions, :meth:`Filter.to_milvus` for a Milvus boolean expression.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from .errors import InputError
from .validate import check_utf8

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_INT64 = (-2 ** 63, 2 ** 63 - 1)


class Filter:
    __slots__ = ("items",)

    def __init__(self, items: tuple):
        self.items = items  # ((field, value), ...), validated

    @classmethod
    def parse(cls, where) -> "Filter | None":
        """``None`` → no filter; a Filter passes through; a mapping is validated."""
        if where is None or isinstance(where, Filter):
            return where
        if not isinstance(where, Mapping) or not where:
            raise InputError(f"filter must be a non-empty object of field: value, got {where!r}")
        items = []
        for field, value in where.items():
            if not isinstance(field, str) or not _FIELD.match(field):
                raise InputError(f"filter field {field!r} must be a plain name (letters, digits, _ and -)")
            if value is not None and not isinstance(value, (str, bool, int, float)):
                raise InputError(f"filter value for {field!r} must be a string, number, boolean or null, "
                                 f"got {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"filter value for {field!r} must be finite, got {value!r}")
            if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
                raise InputError(f"filter value for {field!r} is {value}, beyond the 64-bit integers "
                                 f"({_INT64[0]} .. {_INT64[1]}) that metadata numbers can hold")
            if isinstance(value, str):
                check_utf8(f"filter value for {field!r}", value)
            items.append((field, value))
        return cls(tuple(items))

    def needs_exact_types(self) -> bool:
        """True when a value is a number or null: Milvus compares JSON booleans with numbers, and a
        Milvus 2.3 server can only find null as "not a scalar" (arrays and objects too), so its hits
        must be re-checked with :meth:`matches`."""
        return any(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for _, v in self.items)

    def as_dict(self) -> dict:
        return dict(self.items)

    def __repr__(self) -> str:
        return f"Filter({self.as_dict()!r})"

    # -- Python ---------------------------------------------------------------------------------
    def matches(self, metadata) -> bool:
        meta = metadata if isinstance(metadata, Mapping) else {}
        for field, value in self.items:
            got = meta.get(field)
            if value is None:
                if got is not None:
                    return False
            elif isinstance(value, bool) or isinstance(got, bool):
                if not (isinstance(value, bool) and isinstance(got, bool) and got is value):
                    return False
            elif isinstance(value, str):
                if not isinstance(got, str) or got != value:
                    return False
            elif not isinstance(got, (int, float)) or got != value:
                return False
        return True

    # -- SQLite (JSON1) ---------------------------------------------------------------------------
    def to_sql(self, column: str = "metadata") -> tuple[str, list]:
        """A WHERE clause and its arguments for a TEXT column holding JSON objects."""
        clauses, args = [], []
        for field, value in self.items:
            path = f'$."{field}"'
            if value is None:
                clauses.append(f"coalesce(json_type({column}, ?), 'null') = 'null'")
                args.append(path)
            elif isinstance(value, bool):
                clauses.append(f"json_type({column}, ?) = ?")
                args += [path, "true" if value else "false"]
            elif isinstance(value, str):
                clauses.append(f"(json_type({column}, ?) = 'text' AND json_extract({column}, ?) = ?)")
                args += [path, path, value]
            else:
                clauses.append(f"(json_type({column}, ?) IN ('integer', 'real') AND json_extract({column}, ?) = ?)")
                args += [path, path, value]
        return " AND ".join(clauses), args

    # -- Milvus -----------------------------------------------------------------------------------
    def to_milvus(self, column: str = "metadata") -> str:
        clauses = []
        for field, value in self.items:
            ref = f'{column}["{field}"]'
            if value is None:
                # `is null` needs Milvus >= 2.4 (Lite has it; a 2.3 server refuses to parse it). This works on
                # both: Lite's `exists` is false for missing and null; a 2.3 server's only for missing,
                # and its explicit nulls are the values that are no scalar (see needs_exact_types)
                clauses.append(f'(not (exists {ref}) or not ({ref} >= 0 or {ref} < 0 or {ref} >= "" or '
                               f"{ref} == true or {ref} == false))")
            elif isinstance(value, bool):
                clauses.append(f"{ref} == {'true' if value else 'false'}")
            elif isinstance(value, str):
                clauses.append(f"{ref} == {json.dumps(value, ensure_ascii=False)}")
            else:
                clauses.append(f"{ref} == {value!r}")
        return " and ".join(clauses)
