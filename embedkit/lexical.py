"""BM25 over Chinese words: rjieba (or jieba) tokenisation and bm25s scoring.

:func:`tokenize` cuts mixed Chinese / English / number text into words, lower-cases ASCII letters and
drops tokens made only of punctuation or whitespace.  :class:`BM25Index` keeps every document's tokens
(as ids into its own vocabulary, in flat int32 arrays), so it follows adds and deletes: a change marks
the bm25s matrix stale and the next search (or :meth:`BM25Index.refresh`) rebuilds it from the stored
tokens of the live documents.  A deleted id is gone from the stored tokens, so it can never come back
from the lexical side; the scores after a rebuild are exactly those of a fresh bm25s index over the live
documents.  Saved state is JSON + ``.npy``/``.npz`` (bm25s's own format plus our tokens), never pickle.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np

from .errors import IndexFormatError, InputError, NotFittedError
from .fsutil import atomic_save_npz, atomic_write_json, fsync_dir, read_json

log = logging.getLogger(__name__)

FORMAT = "embedkit-bm25"
FORMAT_VERSION = 1
METHODS = ("lucene", "robertson", "atire")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _cutter():
    """The word segmenter: rjieba (jieba-rs) if installed, else jieba.  Returns (name, cut function)."""
    try:
        import rjieba

        return "rjieba", rjieba.cut
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    try:
        import jieba

        return "jieba", lambda text: jieba.lcut(text, HMM=True)
    except ImportError:  # pragma: no cover
        raise ImportError("the lexical index needs a Chinese word segmenter: pip install rjieba "
                          "(or jieba)") from None


def tokenizer_name() -> str:
    """``rjieba`` or ``jieba`` with its version (recorded with a saved index)."""
    from importlib import metadata

    name, _ = _cutter()
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:  # pragma: no cover
        return name


def _keep(tok: str) -> bool:
    return any(c.isalnum() for c in tok)


def tokenize(text: str) -> list[str]:
    """Words of ``text``: Chinese words from the segmenter, English words and numbers kept whole,
    ASCII lower-cased, punctuation- and whitespace-only tokens dropped.

    >>> tokenize("iPhone 15 多少钱？")
    ['iphone', '15', '多少', '钱']
    """
    if not isinstance(text, str):
        raise InputError(f"text to tokenize must be str, got {type(text).__name__} ({text!r:.40})")
    _, cut = _cutter()
    return [t.translate(_ASCII_LOWER) for t in (s.strip() for s in cut(text)) if t and _keep(t)]


def tokenize_many(texts) -> list[list[str]]:
    _, cut = _cutter()
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is {type(text).__name__} ({text!r:.40}); texts must be str")
        out.append([t.translate(_ASCII_LOWER) for t in (s.strip() for s in cut(text)) if t and _keep(t)])
    return out


def _as_token_lists(docs, what: str) -> list[list[str]]:
    docs = list(docs)
    if all(isinstance(d, str) for d in docs):
        return tokenize_many(docs)
    for i, d in enumerate(docs):
        if not isinstance(d, (list, tuple)) or not all(isinstance(t, str) for t in d):
            raise InputError(f"{what} {i} ({d!r:.40}): give all texts (str) or all token lists (list of str)")
    return [list(d) for d in docs]


def _as_ids(ids, n: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(list(ids))
    except TypeError:
        raise InputError(f"ids must be a sequence of integers, got {ids!r:.60}") from None
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"ids must be a 1-D sequence of integers, got {arr.dtype} shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise InputError(f"got {len(arr)} ids for {n} documents; give one id per document")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"duplicate id {int(uniq[counts > 1][0])!r}; ids must be unique")
    return arr.astype(np.int64)


class BM25Index:
    """BM25 over Chinese words with bm25s scoring; documents are integer ids.

    >>> bm = BM25Index().fit([1, 2], ["借呗怎么还款", "花呗如何开通"])  # doctest: +SKIP
    >>> bm.search(["借呗还款"], k=5)                                    # doctest: +SKIP
    [[(0.98..., 1)]]

    ``fit(ids, docs)`` takes texts or token lists; ``add`` / ``delete`` follow changes; ``search``
    returns per query up to ``k`` ``(score, id)`` pairs, best first, only documents that share at least
    one word with the query (an empty query after tokenisation gets no hits)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene"):
        self.k1 = k1
        self.b = b
        self.method = method

    # -- building -------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"BM25 method {self.method!r} is not one of {', '.join(METHODS)}")
        if not (isinstance(self.k1, (int, float)) and self.k1 >= 0):
            raise InputError(f"k1 must be a number >= 0, got {self.k1!r}")
        if not (isinstance(self.b, (int, float)) and 0 <= self.b <= 1):
            raise InputError(f"b must be a number in [0, 1], got {self.b!r}")

    def fit(self, ids, docs) -> BM25Index:
        """Index ``docs`` (texts, or token lists from :func:`tokenize`) under integer ``ids``."""
        self._check_params()
        toks = _as_token_lists(docs, "document")
        ids = _as_ids(ids, len(toks))
        self.tokenizer_ = tokenizer_name()
        self.vocab_: dict[str, int] = {}
        self.ids_ = np.zeros(0, dtype=np.int64)
        self._flat = np.zeros(0, dtype=np.int32)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._append(ids, toks)
        self.refresh()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "ids_"):
            raise NotFittedError("this BM25Index is not fitted yet; call fit(ids, docs) or BM25Index.load(dir)")

    def _append(self, ids: np.ndarray, toks: list[list[str]]) -> None:
        vocab = self.vocab_
        flat = [vocab.setdefault(t, len(vocab)) for doc in toks for t in doc]
        lens = np.fromiter((len(d) for d in toks), dtype=np.int64, count=len(toks))
        self._flat = np.concatenate([self._flat, np.asarray(flat, dtype=np.int32)])
        self._offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(lens)])
        self.ids_ = np.concatenate([self.ids_, ids])
        self._stale = True

    def add(self, ids, docs) -> int:
        """Add documents (ids must be new); the next search sees them."""
        self._check_fitted()
        toks = _as_token_lists(docs, "document")
        ids = _as_ids(ids, len(toks))
        dup = np.isin(ids, self.ids_)
        if dup.any():
            raise InputError(f"id {int(ids[dup][0])!r} is already in the lexical index; ids must be unique")
        self._append(ids, toks)
        return len(ids)

    def delete(self, ids) -> int:
        """Remove documents; an id that is not in the index is an error (nothing is removed then)."""
        self._check_fitted()
        ids = _as_ids(ids)
        if ids.size == 0:
            raise InputError("no ids to delete")
        missing = ids[~np.isin(ids, self.ids_)]
        if missing.size:
            raise InputError(f"id {int(missing[0])!r} is not in the lexical index "
                             f"({missing.size} of {ids.size} unknown; nothing deleted)")
        keep = ~np.isin(self.ids_, ids)
        lens = np.diff(self._offsets)
        tok_keep = np.repeat(keep, lens)
        self._flat = self._flat[tok_keep]
        self._offsets = np.concatenate([[0], np.cumsum(lens[keep])])
        self.ids_ = self.ids_[keep]
        self._stale = True
        return int(ids.size)

    def __len__(self) -> int:
        return 0 if not hasattr(self, "ids_") else len(self.ids_)

    @property
    def stale(self) -> bool:
        """True when adds or deletes are not yet in the bm25s matrix (the next search rebuilds it)."""
        return bool(getattr(self, "_stale", False))

    def tokens(self, id_) -> list[str]:
        """The stored tokens of one document."""
        self._check_fitted()
        rows = np.flatnonzero(self.ids_ == id_)
        if rows.size == 0:
            raise InputError(f"id {id_!r} is not in the lexical index")
        words = list(self.vocab_)
        r = int(rows[0])
        return [words[t] for t in self._flat[self._offsets[r]:self._offsets[r + 1]]]

    def refresh(self) -> BM25Index:
        """Rebuild the bm25s matrix from the stored tokens of the live documents (and drop words no
        live document uses from the vocabulary). Documents without words (the empty rows of a long
        document's later passages) are left out of bm25s, so they do not count in the corpus statistics
        (document count, average length)."""
        import bm25s

        self._check_fitted()
        used, remapped = np.unique(self._flat, return_inverse=True)
        words = list(self.vocab_)
        self.vocab_ = {words[u]: i for i, u in enumerate(used.tolist())}
        self._flat = remapped.astype(np.int32).ravel()
        bm = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._worded = np.flatnonzero(np.diff(self._offsets) > 0)  # rows with at least one word
        if len(self._flat):  # no words at all (no documents, or only empty ones): nothing can match
            flat = self._flat.tolist()
            off = self._offsets.tolist()
            docs = [flat[off[r]:off[r + 1]] for r in self._worded.tolist()]
            bm.index((docs, dict(self.vocab_)), create_empty_token=False, show_progress=False)
            self._bm = bm
        else:
            self._bm = None
        self._stale = False
        return self

    # -- searching ------------------------------------------------------------------------
    def search(self, queries, k: int = 10, *, allowed_ids=None, excluded_ids=None) -> list[list[tuple[float, int]]]:
        """Per query, up to ``k`` ``(score, id)`` best first (ties: earlier-added document first).

        ``queries``: texts or token lists.  ``allowed_ids``: only these ids may be returned;
        ``excluded_ids``: these may not (deletions recorded elsewhere)."""
        self._check_fitted()
        if isinstance(queries, str):
            raise InputError("queries must be a list of texts (got one str); wrap it in a list")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        qtoks = _as_token_lists(queries, "query")
        if self._stale:
            self.refresh()
        mask = None
        if allowed_ids is not None:
            mask = np.isin(self.ids_, np.fromiter((int(i) for i in allowed_ids), dtype=np.int64))
        if excluded_ids is not None and len(excluded_ids):
            keep = ~np.isin(self.ids_, np.asarray(excluded_ids, dtype=np.int64))
            mask = keep if mask is None else mask & keep
        out = []
        for toks in qtoks:
            out.append(self._search_one(toks, int(k), mask))
        return out

    def stats(self) -> dict:
        """The corpus statistics BM25 scores with: documents, average length, per-word document frequency."""
        self._check_fitted()
        lens = np.diff(self._offsets)
        doc_of = np.repeat(np.arange(len(lens)), lens)
        worded = lens[lens > 0]  # documents without words are not part of the statistics (see refresh)
        pairs = np.unique(np.stack([doc_of, self._flat.astype(np.int64)]), axis=1) if len(self._flat) \
            else np.zeros((2, 0), np.int64)
        df = np.bincount(pairs[1], minlength=len(self.vocab_)) if pairs.shape[1] else np.zeros(len(self.vocab_))
        return {"n_docs": int(len(worded)), "avgdl": float(worded.mean()) if len(worded) else 0.0,
                "df": {w: int(df[i]) for w, i in self.vocab_.items()}}

    def score_with(self, stats: dict, query_tokens: list[str], doc_tokens: list[list[str]]) -> np.ndarray:
        """BM25 (this index's k1, b, method) of other documents against ``stats`` of this corpus — how
        documents added since the index was built are scored until the next rebuild (as Lucene scores
        new segments with the index's statistics)."""
        from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

        idf_fn, tfc_fn = _select_idf_scorer(self.method), _select_tfc_scorer(self.method)
        n, avg = max(1, stats["n_docs"]), stats["avgdl"] or 1.0
        q = [t for t in query_tokens if t]  # a repeated query word counts each time, as bm25s scores the base
        idf = {t: idf_fn(stats["df"].get(t, 0), N=n) for t in q}
        out = np.zeros(len(doc_tokens), dtype=np.float32)
        for j, toks in enumerate(doc_tokens):
            if not toks:
                continue
            counts: dict[str, int] = {}
            for t in toks:
                counts[t] = counts.get(t, 0) + 1
            dl = len(toks)
            out[j] = sum(idf[t] * tfc_fn(tf_array=counts[t], l_d=dl, l_avg=avg, k1=self.k1, b=self.b)
                         for t in q if t in counts)
        return out

    def get_scores(self, query) -> np.ndarray:
        """BM25 score of every live document (in :attr:`ids_` order) for one query."""
        self._check_fitted()
        if self._stale:
            self.refresh()
        toks = tokenize(query) if isinstance(query, str) else list(query)
        tids = [self.vocab_[t] for t in toks if t in self.vocab_ and t]
        out = np.zeros(len(self.ids_), dtype=np.float32)
        if tids and self._bm is not None:
            out[self._worded] = self._bm.get_scores_from_ids(tids)
        return out

    def _search_one(self, toks: list[str], k: int, mask) -> list[tuple[float, int]]:
        scores = self.get_scores(toks)
        hit = scores > 0
        if mask is not None:
            hit &= mask
        rows = np.flatnonzero(hit)
        if rows.size > k:
            s = scores[rows]
            kth = np.partition(s, rows.size - k)[rows.size - k]
            rows = rows[s >= kth]
        order = np.lexsort((rows, -scores[rows]))[:k]
        return [(float(scores[rows[i]]), int(self.ids_[rows[i]])) for i in order]

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the index into ``directory`` crash-safely: the data goes into a new generation
        folder, then ``bm25.json`` is switched to it atomically and older generations are removed."""
        self._check_fitted()
        if self._stale:
            self.refresh()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        gen = f"bm25-{uuid.uuid4().hex[:12]}"
        tmp = d / gen
        tmp.mkdir()
        try:
            if self._bm is not None:
                self._bm.save(tmp / "bm25s", show_progress=False)
            atomic_save_npz(tmp / "tokens.npz", ids=self.ids_, flat=self._flat, offsets=self._offsets,
                            vocab=np.asarray(list(self.vocab_), dtype=str))
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            fsync_dir(tmp)
            atomic_write_json(d / "bm25.json", {
                "format": FORMAT, "version": FORMAT_VERSION, "generation": gen,
                "params": {"k1": self.k1, "b": self.b, "method": self.method},
                "tokenizer": self.tokenizer_, "n_docs": len(self.ids_),
                "n_words": len(self.vocab_)})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in d.glob("bm25-*"):
            if old.name != gen and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> BM25Index:
        import bm25s

        d = Path(directory)
        meta = read_json(d / "bm25.json", "lexical index manifest")
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise IndexFormatError(f"{d / 'bm25.json'} is not an {FORMAT} v{FORMAT_VERSION} manifest "
                                   f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
        gen = d / str(meta.get("generation"))
        try:
            with np.load(gen / "tokens.npz", allow_pickle=False) as z:
                ids, flat, offsets, vocab = z["ids"], z["flat"], z["offsets"], z["vocab"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise IndexFormatError(f"lexical tokens {gen / 'tokens.npz'} are missing or corrupt: {str(e)[:200]}") from None
        self = cls(**meta["params"])
        self._check_params()
        n = int(meta.get("n_docs", -1))
        if not (len(ids) == n == len(offsets) - 1 and offsets[-1] == len(flat)):
            raise IndexFormatError(f"lexical index in {d} is inconsistent: manifest says {n} documents, "
                                   f"tokens file has {len(ids)} ids and {len(offsets) - 1} offsets")
        self.ids_ = ids.astype(np.int64)
        self._flat = flat.astype(np.int32)
        self._offsets = offsets.astype(np.int64)
        self.vocab_ = {str(w): i for i, w in enumerate(vocab.tolist())}
        self.tokenizer_ = meta.get("tokenizer", "")
        if self.tokenizer_ != tokenizer_name():
            log.warning("lexical index %s was tokenised with %s, this process uses %s; queries may "
                        "split differently (rebuild it to match)", d, self.tokenizer_, tokenizer_name())
        self._bm = None
        if len(flat):
            try:
                self._bm = bm25s.BM25.load(gen / "bm25s", show_progress=False)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise IndexFormatError(f"bm25s matrix {gen / 'bm25s'} is missing or corrupt: {str(e)[:200]}") from None
        worded = np.flatnonzero(np.diff(self._offsets) > 0)
        # the matrix holds the documents with words (an index saved before that rule holds all of them)
        self._worded = worded if self._bm is None or self._bm.scores["num_docs"] != n else np.arange(n)
        if self._bm is not None and self._bm.scores["num_docs"] != len(self._worded):
            raise IndexFormatError(f"bm25s matrix in {gen} has {self._bm.scores['num_docs']} documents, "
                                   f"the manifest says {n} ({len(worded)} with words)")
        self._stale = False
        return self
