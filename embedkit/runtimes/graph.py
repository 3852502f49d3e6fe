"""Shared parts of the runtimes that execute an exported graph (ONNX Runtime, OpenVINO): numpy feeds,
and pooling of the graph's outputs exactly as the torch path pools them."""

from __future__ import annotations

import logging

import numpy as np

from .base import Runtime
from .pooling import pool_hidden

log = logging.getLogger(__name__)


class GraphRuntime(Runtime):
    """Subclasses set ``self.input_names`` and implement :meth:`forward` (numpy feeds -> outputs)."""

    name = "graph"
    variant = "fp32"  # which exported graph (embedkit.runtimes.onnx_export.ensure_model)

    def __init__(self, encoder):
        super().__init__(encoder)
        dev = encoder.device
        if dev not in (None, "cpu") and not str(dev).startswith("cpu"):
            log.warning("backend %s runs on the CPU (device %r ignored)", self.name, dev)
        self._post = [m for i, m in enumerate(encoder.st) if i > 0] if encoder.pooling == "model" else None

    def default_threads(self) -> int:
        """``encoder.threads``, else torch's intra-op thread count (what the torch path would use)."""
        if self.encoder.threads:
            return int(self.encoder.threads)
        import torch

        return max(1, torch.get_num_threads())

    def feeds(self, features) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(features[k].cpu().numpy(), dtype=np.int64) for k in self.input_names}

    def describe(self) -> dict:
        return {"runtime": self.name, "graph": self.variant, "threads": self.default_threads()}

    def pool(self, features, outputs) -> np.ndarray:
        import torch

        enc = self.encoder
        last = torch.from_numpy(np.asarray(outputs["last_hidden_state"]))
        with torch.inference_mode():
            if self._post is not None:
                feats = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
                feats["token_embeddings"] = last
                for module in self._post:
                    feats = module(feats)
                emb = feats["sentence_embedding"]
            else:
                if enc.pooling == "first-last-avg":
                    # pool_hidden reads [1] (first layer) and [-1] (last); [0] is the embeddings
                    hidden = (None, torch.from_numpy(np.asarray(outputs["first_hidden_state"])), last)
                else:
                    hidden = (last,)
                pooler = outputs.get("pooler_output")
                emb = pool_hidden(enc.pooling, hidden, features["attention_mask"].cpu(),
                                  torch.from_numpy(np.asarray(pooler)) if pooler is not None else None)
        return np.ascontiguousarray(emb.float().numpy(), dtype=np.float32)
