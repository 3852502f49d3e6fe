"""Chinese text normalisation, a query-path stage: documents and queries pass through the same one.

=========  ====================================================================================
mode       what
=========  ====================================================================================
``none``   text unchanged
``nfkc``   Unicode NFKC (full-width letters, digits and punctuation -> half-width, compatibility
           forms folded) then case folding (``str.casefold``)
``t2s``    Traditional -> Simplified Chinese with OpenCC (config ``t2s``)
``s2t``    Simplified -> Traditional Chinese with OpenCC (config ``s2t``)
=========  ====================================================================================

OpenCC (PyPI ``opencc``) is imported only when a t2s/s2t normaliser is first used.
"""

from __future__ import annotations

import unicodedata
from importlib import metadata

from .constants import TEXT_NORMALIZATIONS as MODES
from .errors import InputError


class TextNormalizer:
    """``TextNormalizer(mode)(texts) -> texts``; ``spec`` is the mode, ``describe()`` goes in the manifest."""

    def __init__(self, mode: str = "none"):
        mode = str(mode).strip().lower() if mode is not None else "none"
        if mode not in MODES:
            raise InputError(f"text normalisation {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self._converter = None

    @property
    def spec(self) -> str:
        return self.mode

    def describe(self) -> dict:
        d = {"mode": self.mode}
        if self.mode in ("t2s", "s2t"):
            d["opencc"] = _opencc_version()
            d["config"] = f"{self.mode}.json"
        elif self.mode == "nfkc":
            d["unicode"] = unicodedata.unidata_version
        return d

    def _opencc(self):
        if self._converter is None:
            try:
                import opencc
            except ImportError:
                raise InputError(f"text normalisation {self.mode!r} needs OpenCC: pip install opencc") from None
            self._converter = opencc.OpenCC(f"{self.mode}.json")
        return self._converter

    def normalize(self, text: str) -> str:
        if not isinstance(text, str):
            raise InputError(f"text must be str, got {type(text).__name__} ({text!r:.40})")
        if self.mode == "none":
            return text
        if self.mode == "nfkc":
            return unicodedata.normalize("NFKC", text).casefold()
        return self._opencc().convert(text)

    def __call__(self, texts: list[str]) -> list[str]:
        if isinstance(texts, str):
            raise InputError("TextNormalizer takes a list of strings; wrap a single text in a list")
        return [self.normalize(t) for t in texts]

    def __repr__(self) -> str:
        return f"TextNormalizer({self.mode!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, TextNormalizer) and other.mode == self.mode

    def __hash__(self) -> int:
        return hash(("TextNormalizer", self.mode))


def _opencc_version() -> str | None:
    try:
        return metadata.version("opencc")
    except metadata.PackageNotFoundError:
        return None
