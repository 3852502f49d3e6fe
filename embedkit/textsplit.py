"""Passages: how a document longer than the encoder's window is read, a query-path stage beside
:mod:`embedkit.textnorm`.

==============  ==================================================================================
mode            what
==============  ==================================================================================
``passages``    split into passages of at most ``max_tokens`` tokens of the model's own tokenizer,
                each encoded and indexed; the document stays one document (the default)
``truncate``    one vector per document from its first ``max_length`` tokens (the text beyond is not
                read; the build and add commands warn with the count of documents cut)
==============  ==================================================================================

Splitting is done by `semantic-text-splitter <https://pypi.org/project/semantic-text-splitter/>`_
(Rust, counts with the Hugging Face tokenizer itself). It cuts at the coarsest boundary that fits:
runs of line breaks, then Unicode sentence ends (UAX #29: ``。！？!?`` and ``.`` before a space), then
words (each Han character is a word), then characters; consecutive units are merged up to the
window. Passages are returned as character spans of the original text: without overlap they tile
it exactly (joined back, they give the text), with ``overlap`` tokens each passage repeats the end
of the previous one. ``max_tokens`` defaults to the encoder's ``max_length`` less the special tokens
the tokenizer adds ([CLS] and [SEP] for BERT), so every passage is read whole; ``overlap`` defaults
to half of ``max_tokens`` (:data:`DEFAULT_OVERLAP`: on CMRC 2018 trial, MRR@10 rose from 96.86 with
no overlap to 97.50 at 32 of 62 tokens and 97.63 at 40, then fell to 97.44 at 48; half is within
0.13 of the best with 6% fewer vectors — ``scripts/bench_documents.py`` reports the dev set).

The splitter's cost grows with the square of the longest run without a sentence end, so a text is
first cut into blocks of at most ``BLOCK`` characters at the last sentence end (else line break, else
clause mark ``，、；：,;:``) in the block's second half, and each block is split on its own: a block
boundary is also a passage boundary (overlap does not cross it), which costs nothing where the cut falls at a sentence end.
"""

from __future__ import annotations

from importlib import metadata

from .constants import SPLIT_MODES as MODES
from .errors import InputError

DEFAULT_MODE = "passages"
LIBRARY = "semantic-text-splitter"
DEFAULT_OVERLAP = 0.5              # of max_tokens, when overlap is not given (see the module doc)
BLOCK = 1000                       # characters handed to the splitter at once (see the module doc)
_CUTS = ("。！？!?", "\n", "，、；：,;:")  # block cuts, preferred first


class PassageSplitter:
    """``PassageSplitter(mode, max_tokens, overlap)``; :meth:`bind` gives it the model's tokenizer.

    ``spans(text)`` -> ``[(start, end), ...]`` character offsets, in order. Parameters are stored as
    given; what :meth:`bind` derives ends in ``_``."""

    def __init__(self, mode: str = DEFAULT_MODE, max_tokens: int | None = None, overlap: int | None = None):
        self.mode = mode
        self.max_tokens = max_tokens
        self.overlap = overlap

    @classmethod
    def from_manifest(cls, desc: dict | None) -> "PassageSplitter":
        """The rule recorded in a manifest; an index built before passages existed truncates."""
        if not desc:
            return cls("truncate")
        return cls(desc.get("mode", "truncate"), desc.get("max_tokens"), int(desc.get("overlap") or 0))

    def validate(self) -> "PassageSplitter":
        """Check the parameters (errors quote the value); ``bind`` calls it too."""
        _check(self.mode, self.max_tokens, self.overlap)
        return self

    @property
    def splits(self) -> bool:
        return self.mode == "passages"

    def bind(self, tokenizer, max_length: int) -> "PassageSplitter":
        """Use ``tokenizer`` (a Hugging Face fast tokenizer) for a model reading ``max_length`` tokens."""
        self.validate()
        special = int(tokenizer.num_special_tokens_to_add(pair=False)) if hasattr(
            tokenizer, "num_special_tokens_to_add") else 2
        window = int(max_length) - special
        if window <= 0:
            raise InputError(f"max_length {max_length} leaves no room for text after {special} special tokens")
        if self.max_tokens is not None and self.max_tokens > window:
            raise InputError(f"passage max_tokens {self.max_tokens} exceeds the encoder's window of {window} "
                             f"tokens (max_length {max_length} less {special} special tokens)")
        self.max_tokens_ = int(self.max_tokens or window)
        self.overlap_ = int(self.max_tokens_ * DEFAULT_OVERLAP) if self.overlap is None else self.overlap
        if self.overlap_ >= self.max_tokens_:
            raise InputError(f"passage overlap {self.overlap_} must be smaller than max_tokens {self.max_tokens_}")
        self.tokenizer_ = tokenizer
        self.splitter_ = None
        if self.splits:
            try:
                from semantic_text_splitter import TextSplitter
            except ImportError:  # pragma: no cover - a core dependency
                raise InputError("passages need semantic-text-splitter: pip install semantic-text-splitter") from None
            backend = getattr(tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise InputError("passages need a fast (Rust) Hugging Face tokenizer; this model's is "
                                 f"{type(tokenizer).__name__} — use --split truncate")
            self.splitter_ = TextSplitter.from_huggingface_tokenizer(backend, self.max_tokens_,
                                                                     overlap=self.overlap_, trim=False)
        return self

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text``'s passages (one span, the whole text, when it fits or in truncate mode)."""
        if not isinstance(text, str):
            raise InputError(f"text must be str, got {type(text).__name__} ({text!r:.40})")
        if self.splitter_ is None or not text:
            return [(0, len(text))]
        out = []
        for b0, b1 in _blocks(text):
            out += [(b0 + int(off), b0 + int(off) + len(chunk)) for off, chunk in self.splitter_.chunk_indices(text[b0:b1])]
        return out or [(0, len(text))]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text, without special tokens (what the window is compared with)."""
        enc = self.tokenizer_(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in enc]

    def describe(self) -> dict:
        d = {"mode": self.mode, "max_tokens": getattr(self, "max_tokens_", self.max_tokens),
             "overlap": getattr(self, "overlap_", self.overlap) if self.splits else 0}
        if self.splits:
            d["library"] = LIBRARY
            d["version"] = _version()
        return d

    def __repr__(self) -> str:
        return f"PassageSplitter({self.mode!r}, max_tokens={self.max_tokens!r}, overlap={self.overlap!r})"


def _blocks(text: str):
    """``(start, end)`` blocks of at most :data:`BLOCK` characters, tiling ``text`` (see the module doc)."""
    start = 0
    while len(text) - start > BLOCK:
        cut = BLOCK
        for marks in _CUTS:
            at = max(text.rfind(m, start + BLOCK // 2, start + BLOCK) for m in marks)
            if at >= 0:
                cut = at + 1 - start
                break
        yield start, start + cut
        start += cut
    yield start, len(text)


def _check(mode, max_tokens, overlap) -> None:
    if mode not in MODES:
        raise InputError(f"split mode {mode!r} is not one of {', '.join(MODES)}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0):
        raise InputError(f"passage max_tokens must be a positive integer, got {max_tokens!r}")
    if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0):
        raise InputError(f"passage overlap must be a non-negative integer, got {overlap!r}")


def _version() -> str | None:
    try:
        return metadata.version(LIBRARY)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return None
