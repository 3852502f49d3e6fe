"""Poolings of the BERT-whitening paper, shared by every runtime (torch tensors in, torch tensors out).

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

import numpy as np

from ..constants import POOLINGS
from ..errors import InputError

__all__ = ["MODEL_INPUTS", "POOLINGS", "check_pooling", "count_tokens", "l2_normalize", "masked_mean",
           "pool_hidden"]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


def count_tokens(features) -> np.ndarray:
    """Tokens the model reads for each text of one tokenised batch (int64, one per row): the attention
    mask's row sums (special tokens included, after truncation at max_length; padding excluded)."""
    mask = features["attention_mask"]
    mask = mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask)
    return mask.sum(axis=1).astype(np.int64)
