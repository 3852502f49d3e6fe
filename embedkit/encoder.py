"""Sentence encoder: sentence-transformers models with the BERT-whitening paper's poolings.

``pooling``:

* ``model``          the model's own pooling (its sentence-transformers Pooling module; mean for a
                     plain Hugging Face checkpoint);
* ``cls``            the last layer's [CLS] vector;
* ``pooler``         BERT's pooler output (tanh dense layer over [CLS]);
* ``last-avg``       token average of the last layer (``hidden_states[-1]``);
* ``first-last-avg`` token average of the first transformer layer's output (``hidden_states[1]``;
                     ``hidden_states[0]`` is the embedding layer) and of the last layer's, averaged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .constants import POOLINGS
from .errors import InputError
from .models import resolve_model

log = logging.getLogger(__name__)

BACKENDS = ("torch",)  # the ONNX Runtime path registers itself in embedkit.onnx_backend
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise InputError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    return pooling


def masked_mean(hidden, mask):
    """Token average over the positions where ``mask`` is 1 (torch tensors, [B, T, H] and [B, T])."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool_hidden(pooling: str, hidden_states, attention_mask, pooler_output=None):
    """Pool a model's outputs. ``hidden_states`` is the tuple from ``output_hidden_states=True``."""
    if pooling == "cls":
        return hidden_states[-1][:, 0]
    if pooling == "last-avg":
        return masked_mean(hidden_states[-1], attention_mask)
    if pooling == "first-last-avg":
        if len(hidden_states) < 2:
            raise InputError("first-last-avg needs a model with at least one transformer layer")
        return (masked_mean(hidden_states[1], attention_mask)
                + masked_mean(hidden_states[-1], attention_mask)) / 2
    if pooling == "pooler":
        if pooler_output is None:
            raise InputError("pooling 'pooler' needs a model with a pooler layer; this one has none "
                             "(use 'cls' instead)")
        return pooler_output
    raise InputError(f"pooling {pooling!r} is not computed from hidden states")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), dtype=np.float32)


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


class Encoder:
    """Turn sentences into float32 vectors.

    >>> enc = Encoder("../shared/models/m3e-small", pooling="first-last-avg")
    >>> enc.encode(["今天天气不错", "明天会下雨吗"]).shape
    (2, 512)
    """

    def __init__(self, model: str | os.PathLike | None = None, *, pooling: str = "model",
                 max_length: int = 64, batch_size: int = 32, device: str | None = None,
                 normalize: bool = True, backend: str = "torch"):
        check_pooling(pooling)
        if not isinstance(max_length, int) or max_length <= 0:
            raise InputError(f"max_length must be a positive integer, got {max_length!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_name = resolve_model(model)
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.backend = backend
        self._dim = None
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        _quiet_loaders()
        if Path(self.model_name).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.st = SentenceTransformer(self.model_name, device=self.device)
        self.st.max_seq_length = max_length
        self.st.eval()
        self._runner = _make_runner(self, backend)

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

    def describe(self) -> dict:
        """What determines the vectors (used in index manifests and evaluation cache keys)."""
        return {"model": self.model_name, "pooling": self.pooling, "max_length": self.max_length,
                "backend": self.backend, "dim": self.dim}

    # -- encoding -----------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict:
        prep = getattr(self.st, "preprocess", None) or self.st.tokenize
        return prep(texts)

    def encode(self, sentences, *, batch_size: int | None = None, normalize: bool | None = None,
               show_progress_bar: bool | None = None) -> np.ndarray:
        """Encode a string (-> shape (dim,)) or a list of strings (-> shape (n, dim)), float32.

        Batches are formed from length-sorted texts (longest first, as sentence-transformers does)
        and the original order is restored."""
        texts, single = _as_text_list(sentences)
        bs = batch_size or self.batch_size
        if bs <= 0:
            raise InputError(f"batch_size must be a positive integer, got {bs!r}")
        norm = self.normalize if normalize is None else normalize
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        n_batches = (len(texts) + bs - 1) // bs
        show = n_batches > 8 if show_progress_bar is None else show_progress_bar
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        from tqdm.auto import tqdm

        for b in tqdm(range(n_batches), desc="encode", unit="batch", disable=not show,
                      file=None):
            idx = order[b * bs:(b + 1) * bs]
            out[idx] = self._runner([texts[i] for i in idx])
        if norm:
            out = l2_normalize(out)
        return out[0] if single else out


class _TorchRunner:
    """Runs one batch through the PyTorch model and pools it."""

    def __init__(self, enc: Encoder):
        self.enc = enc

    def __call__(self, batch: list[str]) -> np.ndarray:
        import torch
        from sentence_transformers.util import batch_to_device

        enc = self.enc
        features = batch_to_device(enc.tokenize(batch), enc.device)
        with torch.inference_mode():
            if enc.pooling == "model":
                emb = enc.st.forward(features)["sentence_embedding"]
            else:
                inputs = {k: features[k] for k in _MODEL_INPUTS if k in features}
                out = enc.st[0].auto_model(**inputs, output_hidden_states=True, return_dict=True)
                emb = pool_hidden(enc.pooling, out.hidden_states, inputs["attention_mask"],
                                  getattr(out, "pooler_output", None))
        return emb.float().cpu().numpy()


_RUNNERS = {"torch": _TorchRunner}


def register_backend(name: str, factory) -> None:
    """Register another execution backend: ``factory(encoder) -> callable(list[str]) -> ndarray``."""
    _RUNNERS[name] = factory


def _make_runner(enc: Encoder, backend: str):
    if backend not in _RUNNERS and backend.startswith("onnx"):
        from . import onnx_backend  # noqa: F401  (registers the onnx backends)
    if backend not in _RUNNERS:
        raise InputError(f"backend {backend!r} is not one of {', '.join(sorted(_RUNNERS))}")
    return _RUNNERS[backend](enc)


def _quiet_loaders() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - older transformers
        pass
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
