"""The runner protocol every encoder runtime follows: tokenize -> forward -> pool, plus token counts.

A runtime is built for one :class:`embedkit.encoder.Encoder` (``Runtime(encoder)``) and reads from it
the loaded sentence-transformers model (``encoder.st``), ``pooling``, ``device``, ``max_length`` and
``threads``. It owns whatever execution state it needs (an ONNX Runtime session, an OpenVINO compiled
model) and changes nothing process-wide: thread counts are per session, or set around a forward pass
and restored.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .pooling import count_tokens


def st_tokenize(st, texts: list[str]) -> dict[str, Any]:
    """Tokenise with a SentenceTransformer's own tokenizer (CPU tensors, truncated at its max_seq_length)."""
    prep = getattr(st, "preprocess", None) or st.tokenize
    return prep(texts)


def require_extra(module: str, backend: str, library: str, extra: str):
    """Import ``module`` for ``backend``, or raise InputError naming the extra that installs ``library``."""
    from ..errors import InputError

    try:
        return __import__(module)  # a top-level package name
    except ImportError as e:
        raise InputError(f"backend {backend!r} needs {library}, which is not installed: "
                         f"pip install 'embedkit[{extra}]'") from e


@runtime_checkable
class RuntimeProtocol(Protocol):
    """What :class:`embedkit.encoder.Encoder` needs from a runtime."""

    name: str

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """Model inputs for ``texts`` (``input_ids``, ``attention_mask``, ...), truncated at max_length."""

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        """Run the model on one tokenised batch; returns its outputs by name."""

    def pool(self, features: dict[str, Any], outputs: dict[str, Any]) -> np.ndarray:
        """One float32 row per text (not L2-normalised)."""

    def describe(self) -> dict:
        """Settings that change the vectors (recorded with the encoder's description)."""


class Runtime:
    """Base class: tokenisation through the sentence-transformers model, :meth:`run` chains the steps."""

    name = "base"

    def __init__(self, encoder):
        self.encoder = encoder

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        return st_tokenize(self.encoder.st, texts)

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def pool(self, features: dict[str, Any], outputs: dict[str, Any]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> dict:
        return {"runtime": self.name}

    def run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (float32, one row per text, not normalised) and the tokens read per text (int64 array)."""
        features = self.tokenize(texts)
        vectors = self.pool(features, self.forward(features))
        return np.ascontiguousarray(vectors, dtype=np.float32), count_tokens(features)
