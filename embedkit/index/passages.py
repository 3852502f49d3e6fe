"""Documents made of passages, on top of any store (the stores know only rows).

A document that fits the encoder's window is one row, exactly as before passages existed. A longer
one becomes ``n`` rows, one vector each:

* row 0 has the document's id, its **whole text** and its metadata, plus ``_ek_passages = n`` and
  ``_ek_span`` (the passage's character span in the text);
* row ``i`` (1 ≤ i < n) has the id ``<doc id>\\x1f<i>``, an empty text and the same metadata plus
  ``_ek_passage = i`` and ``_ek_span``.

So metadata filters match every passage of a document, the lexical part (which scores row texts)
sees each document once and whole, ``get`` is one lookup, and the document count is the number of
rows without ``_ek_passage``. Document ids may not contain ``\\x1f`` and user metadata may not use the
``_ek_`` keys (:func:`check_user_docs`).

Document-level search (:func:`group_rows`) ranks documents by their best passage (max), fetching
passage rows deep enough that the top-k documents are exact for an exact store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..corpus import Doc
from ..errors import InputError

log = logging.getLogger(__name__)

SEP = "\x1f"
KEY_PASSAGE = "_ek_passage"
KEY_COUNT = "_ek_passages"
KEY_SPAN = "_ek_span"
RESERVED_PREFIX = "_ek_"
FETCH_FACTOR = 4               # passage rows fetched per wanted document, grown ×4 until k documents


@dataclass
class Expanded:
    rows: list[Doc]            # what the store holds
    texts: list[str]           # what is encoded, one per row
    documents: int
    split: int = 0             # documents read as several passages
    truncated: int = 0         # documents cut at the window (truncate mode)


def check_user_docs(docs) -> None:
    """Ids and metadata a user may give (the row encoding reserves ``\\x1f`` and ``_ek_`` keys)."""
    for d in docs:
        if isinstance(d.id, str) and SEP in d.id:
            raise InputError(f"document id {d.id!r} contains the control character U+001F, which ids may not contain")
        if isinstance(d.metadata, dict):
            bad = [key for key in d.metadata if isinstance(key, str) and key.startswith(RESERVED_PREFIX)]
            if bad:
                raise InputError(f"document {d.id!r}: metadata key {bad[0]!r} is reserved (keys starting with "
                                 f"{RESERVED_PREFIX!r} hold passage positions)")


def row_id(doc_id: str, i: int) -> str:
    return doc_id if i == 0 else f"{doc_id}{SEP}{i}"


def doc_id_of(rid: str) -> str:
    return rid.split(SEP, 1)[0]


def is_document_row(rid: str) -> bool:
    return SEP not in rid


def expand(docs: list[Doc], splitter) -> Expanded:
    """Rows and the texts to encode for ``docs`` under ``splitter`` (a bound PassageSplitter or None)."""
    if splitter is None or not splitter.splits:
        out = Expanded(list(docs), [d.text for d in docs], len(docs))
        if splitter is not None and docs:
            n = sum(c > splitter.max_tokens_ for c in splitter.token_counts(out.texts))
            out.truncated = n
        return out
    rows, texts, split = [], [], 0
    for d in docs:
        spans = splitter.spans(d.text)
        if len(spans) == 1:
            rows.append(d)
            texts.append(d.text)
            continue
        split += 1
        for i, (s, e) in enumerate(spans):
            meta = dict(d.metadata or {})
            meta[KEY_SPAN] = [s, e]
            meta[KEY_COUNT if i == 0 else KEY_PASSAGE] = len(spans) if i == 0 else i
            rows.append(Doc(row_id(d.id, i), d.text if i == 0 else "", meta))
            texts.append(d.text[s:e])
    return Expanded(rows, texts, len(docs), split=split)


def user_metadata(meta: dict | None) -> dict | None:
    """Metadata as the user gave it (the reserved keys removed)."""
    if not meta or not any(k.startswith(RESERVED_PREFIX) for k in meta):
        return meta
    out = {k: v for k, v in meta.items() if not k.startswith(RESERVED_PREFIX)}
    return out or None


def passage_count(meta: dict | None) -> int:
    return int((meta or {}).get(KEY_COUNT, 1))


def rows_of(store, doc_ids: list[str]) -> list[str]:
    """Every row id of the documents ``doc_ids`` (present ones; absent ids are left out)."""
    out = []
    for did in doc_ids:
        got = store.get(did)
        if got is None:
            continue
        out += [row_id(did, i) for i in range(passage_count(got[2]))]
    return out


def passage_of(rid: str, text: str, meta: dict | None, doc_text: str) -> dict:
    """``{"index", "start", "end", "text"}`` of the passage a row holds (the whole text for a one-row document)."""
    meta = meta or {}
    s, e = meta.get(KEY_SPAN, (0, len(doc_text)))
    return {"index": int(meta.get(KEY_PASSAGE, 0)), "start": int(s), "end": int(e), "text": doc_text[s:e]}


class DocTexts:
    """Whole texts of documents whose best row is a later passage (one store lookup each, cached)."""

    def __init__(self, store):
        self.store, self.cache = store, {}

    def __call__(self, rid: str, text: str) -> str:
        if is_document_row(rid):
            return text
        did = doc_id_of(rid)
        if did not in self.cache:
            got = self.store.get(did)
            self.cache[did] = got[1] if got is not None else ""
        return self.cache[did]


def to_documents(row: list[tuple], k: int, texts: DocTexts) -> list[tuple]:
    """One query's passage rows (best first) -> up to ``k`` ``(score, doc id, text, metadata, passage)``,
    each document once, at its best passage's score; ``passage`` is None for a document read whole
    (one row: the passage would be the text itself)."""
    out, seen = [], set()
    for score, rid, text, meta in row:
        did = doc_id_of(rid)
        if did in seen:
            continue
        seen.add(did)
        doc_text = texts(rid, text)
        split = KEY_SPAN in (meta or {})
        out.append((score, did, doc_text, user_metadata(meta), passage_of(rid, text, meta, doc_text) if split else None))
        if len(out) >= k:
            break
    return out


def to_passages(row: list[tuple], texts: DocTexts) -> list[tuple]:
    """One query's passage rows -> ``(score, doc id, passage text, metadata, passage)`` each."""
    out = []
    for score, rid, text, meta in row:
        p = passage_of(rid, text, meta, texts(rid, text))
        out.append((score, doc_id_of(rid), p["text"], user_metadata(meta), p))
    return out


def search_documents(search, n_rows: int, k: int) -> list[list[tuple]]:
    """Rows deep enough for ``k`` distinct documents per query: ``search(depth)`` returns passage rows
    (best first); the depth grows ×4 until every query has ``k`` documents or the store is exhausted.
    With an exact store the max-aggregated top-k is then exact (a document outside the fetched rows
    scores at most the last fetched row)."""
    depth = min(max(k * FETCH_FACTOR, k), max(n_rows, k))
    while True:
        rows = search(depth)
        done = all(len({doc_id_of(r[1]) for r in row}) >= k or len(row) < depth for row in rows)
        if done or depth >= n_rows:
            return rows
        depth = min(depth * FETCH_FACTOR, n_rows)


def check_rows(store, documents_recorded: int | None) -> list[str]:
    """Every document's passages present (rows 1..n-1 of each ``n``-passage document, nothing else) and
    the document count as recorded; problems as strings (``embedkit index check``)."""
    counts: dict[str, int] = {}
    later: dict[str, set[int]] = {}
    for batch in store.iterate():
        for _iid, rid, _text, meta, _vec in batch:
            if is_document_row(rid):
                counts[rid] = passage_count(meta)
            else:
                later.setdefault(doc_id_of(rid), set()).add(int((meta or {}).get(KEY_PASSAGE, -1)))
    problems = []
    for did, n in counts.items():
        have = later.pop(did, set())
        if have != set(range(1, n)):
            problems.append(f"document {did!r} has {n} passages but rows for passages {sorted(have)[:5]} "
                            f"besides the first")
    if later:
        orphan = sorted(later)[0]
        problems.append(f"passage rows of {len(later)} document(s) without their first row, e.g. {orphan!r}")
    if documents_recorded is not None and documents_recorded != len(counts):
        problems.append(f"the manifest counts {documents_recorded} documents, the store holds {len(counts)}")
    return problems[:20]
