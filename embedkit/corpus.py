"""Reading corpora: ``.txt`` (one sentence a line), ``.jsonl`` (a text field) and ``.tsv`` (a column).

Rules, the same for every format:

* empty or whitespace-only texts are **skipped and counted** (logged with their line numbers);
* bytes that are not UTF-8 are **rejected** with the file, line and byte offset;
* ids default to the 1-based line number; duplicate ids are rejected;
* a corpus with no text at all is rejected.

Documents are yielded lazily so an index build can stream a large corpus in chunks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from .constants import CORPUS_FORMATS as FORMATS
from .errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Doc:
    id: str
    text: str
    metadata: dict | None = None


@dataclass
class CorpusStats:
    read: int = 0
    skipped_empty: list[int] = field(default_factory=list)  # line numbers

    def summary(self) -> str:
        s = f"{self.read} texts read"
        if self.skipped_empty:
            lines = ", ".join(map(str, self.skipped_empty[:10])) + (" ..." if len(self.skipped_empty) > 10 else "")
            s += f", {len(self.skipped_empty)} empty lines skipped (line {lines})"
        return s


def detect_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"txt": "txt", "text": "txt", "jsonl": "jsonl", "ndjson": "jsonl", "tsv": "tsv"}.get(suffix, "txt")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"corpus file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"corpus path {str(path)!r} is a directory, expected a file") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                                 f"offset {e.start}); re-encode the file as UTF-8") from None
            yield lineno, line.rstrip("\r\n")


def _pick_column(spec: str | int | None, header: list[str] | None, default: int | None, what: str):
    if spec is None:
        return default
    if isinstance(spec, int) or str(spec).isdigit():
        return int(spec)
    if header is None:
        raise InputError(f"{what} {spec!r} is a name, but the file has no header row")
    if spec not in header:
        raise InputError(f"{what} {spec!r} is not in the header {header}")
    return header.index(spec)


def iter_corpus(path: str | os.PathLike, *, fmt: str | None = None, text_field: str = "text",
                id_field: str = "id", column: str | int | None = None, id_column: str | int | None = None,
                stats: CorpusStats | None = None) -> Iterator[Doc]:
    """Yield :class:`Doc` records from a corpus file (see the module doc for the rules)."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    stats = stats if stats is not None else CorpusStats()
    seen: set[str] = set()
    lines = _lines(path)
    text_col = id_col = None
    if fmt == "tsv":
        named = any(isinstance(c, str) and not c.isdigit() for c in (column, id_column) if c is not None)
        header = None
        if named:
            first = next(lines, None)
            if first is None:
                raise InputError(f"corpus file {str(path)!r} is empty")
            header = first[1].split("\t")
        text_col = _pick_column(column, header, 0, "text column")
        id_col = _pick_column(id_column, header, None, "id column")
    for lineno, line in lines:
        meta = None
        if fmt == "txt":
            text, doc_id = line, str(lineno)
        elif fmt == "jsonl":
            if not line.strip():
                stats.skipped_empty.append(lineno)
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            if text_field not in obj:
                raise InputError(f"{path}:{lineno}: no {text_field!r} field (fields: {sorted(obj)}); "
                                 "choose one with --text-field")
            text = obj[text_field]
            if not isinstance(text, str):
                raise InputError(f"{path}:{lineno}: field {text_field!r} must be a string, got "
                                 f"{type(text).__name__}")
            raw_id = obj.get(id_field, lineno)
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
                raise InputError(f"{path}:{lineno}: id {raw_id!r} must be a string or an integer")
            doc_id = str(raw_id)
            if isinstance(obj.get("metadata"), dict):
                meta = obj["metadata"]
            else:
                meta = {k: v for k, v in obj.items() if k not in (text_field, id_field)} or None
        else:  # tsv
            cells = line.split("\t")
            if not line.strip():
                text = ""
            elif text_col >= len(cells):
                raise InputError(f"{path}:{lineno}: has {len(cells)} columns, text column is {text_col}")
            else:
                text = cells[text_col]
            doc_id = str(lineno)
            if id_col is not None and line.strip():
                if id_col >= len(cells):
                    raise InputError(f"{path}:{lineno}: has {len(cells)} columns, id column is {id_col}")
                doc_id = cells[id_col]
        if not text.strip():
            stats.skipped_empty.append(lineno)
            continue
        if not doc_id:
            raise InputError(f"{path}:{lineno}: empty id")
        if doc_id in seen:
            raise InputError(f"{path}:{lineno}: duplicate id {doc_id!r}; ids must be unique")
        from .validate import check_metadata, check_utf8

        try:  # lone surrogates (JSON's \ud800 escapes), NaN, Infinity or too deep: name the line
            check_utf8(f"document id {doc_id!r}", doc_id)
            check_utf8(f"the text of document {doc_id!r}", text)
            if meta is not None:
                check_metadata(doc_id, meta)
        except InputError as e:
            raise InputError(f"{path}:{lineno}: {e}") from None
        seen.add(doc_id)
        stats.read += 1
        yield Doc(doc_id, text, meta)
    if stats.skipped_empty:
        log.warning("%s: %s", path, stats.summary())
    if stats.read == 0:
        raise InputError(f"corpus {str(path)!r} has no non-empty text"
                         + (f" ({len(stats.skipped_empty)} empty lines skipped)" if stats.skipped_empty else ""))


def chunked(it, size: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, size)):
        yield chunk


def read_corpus(path, **kw) -> list[Doc]:
    return list(iter_corpus(path, **kw))
