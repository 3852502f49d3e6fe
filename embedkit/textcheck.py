"""The one rule for strings that must reach storage as UTF-8 (ids, texts, metadata, filter values, queries).

Kept outside :mod:`embedkit.index` so :mod:`embedkit.filters` can use it without an import cycle."""

from __future__ import annotations

from .errors import InputError


def check_utf8(what: str, value: str) -> None:
    """A string that UTF-8 can encode (no lone surrogates such as ``"\\ud800"``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} contains a lone surrogate {value[e.start]!r} at position {e.start}, which "
                         "UTF-8 cannot encode; send valid Unicode text") from None
