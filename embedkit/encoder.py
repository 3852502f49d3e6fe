"""Sentence encoder: sentence-transformers models with the BERT-whitening paper's poolings.

The execution itself is done by a runtime (``backend=``, see :mod:`embedkit.runtimes`): torch by
default, ONNX Runtime or OpenVINO for the CPU fast paths. Poolings are documented in
:mod:`embedkit.runtimes.pooling` and re-exported here.

Constructing an Encoder changes nothing process-wide: no environment variables, no logger levels.
A local model directory is loaded with ``local_files_only=True`` (no hub access); a hub id is loaded
the usual Hugging Face way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .constants import AUTO_RUNTIME
from .errors import InputError
from .models import resolve_model
from .runtimes import DEFAULT_RUNTIME, make_runtime
from .runtimes.pooling import (
    POOLINGS,
    check_pooling,
    l2_normalize,
    masked_mean,
    pool_hidden,
)

__all__ = ["POOLINGS", "Encoder", "check_pooling", "l2_normalize", "masked_mean", "pool_hidden"]


def _as_text_list(sentences) -> tuple[list[str], bool]:
    if isinstance(sentences, str):
        return [sentences], True
    if isinstance(sentences, (bytes, bytearray)):
        raise InputError("encode() takes str, not bytes: decode the input as UTF-8 first")
    if not isinstance(sentences, Sequence) and not hasattr(sentences, "__iter__"):
        raise InputError(f"encode() takes a string or a list of strings, not {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"item {i} is {type(t).__name__} ({t!r:.40}); every item must be a string")
    return texts, False


def _positive_int(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


class Encoder:
    """Turn sentences into float32 vectors.

    ``backend`` names the runtime (:data:`embedkit.runtimes.RUNTIME_NAMES`, or ``"module:Class"``);
    ``threads`` is the runtime's intra-op thread count (``None``: the library default), applied to its
    own session or around its forward pass only. ``backend="auto"`` measures the installed runtimes on
    this machine once (cached) and runs the fastest within ``auto_bound`` Spearman points of fp32
    (:mod:`embedkit.runtimes.measure`); :attr:`auto_decision` holds that table.

    >>> enc = Encoder("../shared/models/m3e-small", pooling="first-last-avg")
    >>> enc.encode(["今天天气不错", "明天会下雨吗"]).shape
    (2, 512)
    """

    def __init__(self, model: str | os.PathLike | None = None, *, pooling: str = "model",
                 max_length: int = 64, batch_size: int = 32, device: str | None = None,
                 normalize: bool = True, backend: str = DEFAULT_RUNTIME, threads: int | None = None,
                 auto_bound: float = 0.5):
        check_pooling(pooling)
        _positive_int("max_length", max_length)
        _positive_int("batch_size", batch_size)
        _positive_int("threads", threads, allow_none=True)
        self.model_name = resolve_model(model)
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.backend = backend
        self.threads = threads
        self.auto_bound = auto_bound
        self._dim = None
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        local = Path(self.model_name).is_dir()
        self.st = SentenceTransformer(self.model_name, device=self.device, local_files_only=local)
        self.st.max_seq_length = max_length
        self.st.eval()
        self.runtime = make_runtime(backend, self, auto_bound=auto_bound)

    @property
    def auto_decision(self):
        """For ``backend="auto"``: the :class:`embedkit.runtimes.measure.Decision` (choice, measured table,
        cached or not); otherwise None."""
        return getattr(self.runtime, "auto_decision", None)

    # -- properties ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._dim is None:
            if self.pooling == "model":
                get = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
                self._dim = int(get())
            else:
                self._dim = int(self.st[0].auto_model.config.hidden_size)
        return self._dim

    @property
    def runtime_name(self) -> str:
        """The runtime that runs: ``backend``, or for ``backend="auto"`` the one chosen for this machine."""
        return self.runtime.name if self.backend == AUTO_RUNTIME else self.backend

    def describe(self) -> dict:
        """What determines the vectors (used in index manifests and evaluation cache keys)."""
        return {"model": self.model_name, "pooling": self.pooling, "max_length": self.max_length,
                "backend": self.runtime_name, "dim": self.dim}

    # -- encoding -----------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict:
        """The model inputs the runtime feeds for ``texts`` (truncated at max_length)."""
        return self.runtime.tokenize(texts)

    def encode(self, sentences, *, batch_size: int | None = None, normalize: bool | None = None,
               show_progress_bar: bool | None = None) -> np.ndarray:
        """Encode a string (-> shape (dim,)) or a list of strings (-> shape (n, dim)), float32.

        Batches are formed from length-sorted texts (longest first, as sentence-transformers does)
        and the original order is restored."""
        return self.encode_with_usage(sentences, batch_size=batch_size, normalize=normalize,
                                      show_progress_bar=show_progress_bar)[0]

    def encode_with_usage(self, sentences, *, batch_size: int | None = None, normalize: bool | None = None,
                          show_progress_bar: bool | None = None) -> tuple[np.ndarray, np.ndarray | int]:
        """:meth:`encode` plus the tokens the model read, from this same tokenisation: for a list, an
        int64 array with one count per text (its attention-mask sum: special tokens included,
        truncated at max_length, padding excluded; ``.sum()`` is the request total); for a single
        string, an int. Call it on the thread that encodes; nothing is tokenised twice."""
        texts, single = _as_text_list(sentences)
        bs = _positive_int("batch_size", batch_size or self.batch_size)
        norm = self.normalize if normalize is None else normalize
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        n_batches = (len(texts) + bs - 1) // bs
        show = n_batches > 8 if show_progress_bar is None else show_progress_bar
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        n_tokens = np.empty(len(texts), dtype=np.int64)
        from tqdm.auto import tqdm

        for b in tqdm(range(n_batches), desc="encode", unit="batch", disable=not show, file=None):
            idx = order[b * bs:(b + 1) * bs]
            out[idx], n_tokens[idx] = self.runtime.run([texts[i] for i in idx])
        if norm:
            out = l2_normalize(out)
        return (out[0], int(n_tokens[0])) if single else (out, n_tokens)
