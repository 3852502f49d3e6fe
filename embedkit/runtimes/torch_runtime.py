"""The PyTorch runtime: the sentence-transformers model itself (the default)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .base import Runtime
from .pooling import MODEL_INPUTS, pool_hidden


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` intra-op threads and restore the previous count afterwards."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchRuntime(Runtime):
    """One batch through the PyTorch model on ``encoder.device``, pooled as ``encoder.pooling`` says."""

    name = "torch"

    def tokenize(self, texts):
        from sentence_transformers.util import batch_to_device

        return batch_to_device(super().tokenize(texts), self.encoder.device)

    def forward(self, features):
        import torch

        enc = self.encoder
        with torch_threads(enc.threads), torch.inference_mode():
            if enc.pooling == "model":
                return {"sentence_embedding": enc.st.forward(dict(features))["sentence_embedding"]}
            inputs = {k: features[k] for k in MODEL_INPUTS if k in features}
            out = enc.st[0].auto_model(**inputs, output_hidden_states=True, return_dict=True)
            return {"hidden_states": out.hidden_states, "pooler_output": getattr(out, "pooler_output", None)}

    def pool(self, features, outputs) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if "sentence_embedding" in outputs:
                emb = outputs["sentence_embedding"]
            else:
                emb = pool_hidden(self.encoder.pooling, outputs["hidden_states"], features["attention_mask"],
                                  outputs["pooler_output"])
            return emb.float().cpu().numpy()
