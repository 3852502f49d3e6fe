"""The PyTorch runtimes: the sentence-transformers model itself (``torch``, the default) and the same
model under bf16 autocast (``torch-bf16``: matrix products in bf16, the rest in fp32)."""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext

import numpy as np

from .base import Runtime
from .pooling import MODEL_INPUTS, pool_hidden

log = logging.getLogger(__name__)


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

    def precision(self):
        """A context manager for the forward pass (full fp32 here)."""
        return nullcontext()

    def tokenize(self, texts):
        from sentence_transformers.util import batch_to_device

        return batch_to_device(super().tokenize(texts), self.encoder.device)

    def forward(self, features):
        import torch

        enc = self.encoder
        with torch_threads(enc.threads), torch.inference_mode(), self.precision():
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


class TorchBF16Runtime(TorchRuntime):
    """The torch model under ``torch.autocast(bfloat16)``: linear layers and matrix products run in bf16
    (AMX / AVX512-BF16 on CPUs that have them); softmax, layer norm and pooling stay fp32. The encoder's
    ``nn.Linear`` weights are stored in bf16 once, here, so autocast does not re-cast them on every
    batch (the vectors are the same). On hardware without native bf16 it still works, only slower than ``torch``."""

    name = "torch-bf16"
    #: building it changes ``encoder.st`` (its Linear weights become bf16): measuring it must not
    mutates_model = True

    def __init__(self, encoder):
        super().__init__(encoder)
        from .hardware import torch_native_bf16

        import torch

        self._device_type = "cuda" if str(encoder.device).startswith("cuda") else "cpu"
        for module in encoder.st.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(torch.bfloat16)
        if not torch_native_bf16(encoder.device):
            log.warning("backend torch-bf16: device %r has no native bf16; it will be slower than 'torch'",
                        encoder.device)

    def precision(self):
        import torch

        return torch.autocast(self._device_type, dtype=torch.bfloat16)

    def describe(self) -> dict:
        return {"runtime": self.name, "precision": "bf16-autocast"}
