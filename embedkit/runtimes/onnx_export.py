"""ONNX graphs of an encoder's transformer, exported once and cached, for the ONNX Runtime and
OpenVINO runtimes (:mod:`embedkit.runtimes.onnx_runtime`, :mod:`embedkit.runtimes.openvino_runtime`).

Graph variants (``variant``):

* ``fp32``         the exported transformer, fused by ONNX Runtime's transformer optimizer;
* ``int8-dynamic`` ``fp32`` with dynamic int8 quantisation (``quantize_dynamic``: int8 weights per
                   output channel with reduced range, activations quantised at run time);
* ``plain``        the exported transformer without ONNX-Runtime-specific fusions (what OpenVINO reads);
* ``int8-static``  ``plain`` with static int8 QDQ quantisation (``quantize_static``): activation ranges
                   calibrated on real Chinese sentences (:mod:`embedkit.runtimes.calibration`).

See ``scripts/bench_encode.py`` for the speed and Spearman cost of each.

The transformer (``encoder.st[0].auto_model``) is exported with ``torch.onnx.export`` (TorchScript
exporter, dynamic batch and sequence axes); sentence-transformers' own ONNX route needs
``optimum-onnx``, which conflicts with the transformers version sentence-transformers 6 brings.
The graph returns the last hidden state, plus the first layer's output and/or the pooler output
when the pooling needs them. BERT-style graphs are then fused by ONNX Runtime's offline transformer
optimizer (attention, skip-layer-norm, bias-GELU kernels) for ONNX Runtime.

Exports are cached, keyed by the model's identity (name, config, weight files, a digest of the
parameters), the exported outputs, the opset and the variant's recipe:

1. ``$EMBEDKIT_ONNX_CACHE/<key>/`` when that variable is set;
2. else ``$XDG_CACHE_HOME/embedkit/onnx/<key>/`` (default ``~/.cache/embedkit/onnx/<key>/``).

A model directory is input: nothing is ever written into it, even when it is writable (an export of
m3e-small in all variants is about 290 MB, and model folders are often shared).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_path, atomic_write_json, user_cache_dir
from ..provenance import model_fingerprint
from .base import require_extra, st_tokenize
from .pooling import MODEL_INPUTS

log = logging.getLogger(__name__)

OPSET = 17
FORMAT_VERSION = 2  # bump when the exported graph's layout changes
# How each variant is made (part of its cache key): bump a recipe when its settings change.
RECIPES = {
    "fp32": None,
    "int8-dynamic": "dynamic-s8-per-channel-reduce-range-matmul-attention",
    "plain": "unfused",
    "int8-static": None,  # set from embedkit.runtimes.calibration.STATIC_RECIPE when used
}


def _require_onnxruntime():
    return require_extra("onnxruntime", "onnx", "ONNX Runtime", "onnx")


def _outputs_for(pooling: str) -> tuple[str, ...]:
    outs = ["last_hidden_state"]
    if pooling == "first-last-avg":
        outs.append("first_hidden_state")
    if pooling == "pooler":
        outs.append("pooler_output")
    return tuple(outs)


# -- cache location and key ------------------------------------------------------------------------
def _param_digest(model) -> str:
    """A cheap fingerprint of the weights actually loaded (catches models changed in memory)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(np.float64(p.detach().double().sum().item()).tobytes())
    return h.hexdigest()


def _recipe(variant: str):
    if variant not in RECIPES:
        raise InputError(f"ONNX graph variant {variant!r} is not one of {', '.join(RECIPES)}")
    if variant == "int8-static":
        from .calibration import STATIC_RECIPE

        return STATIC_RECIPE
    return RECIPES[variant]


def cache_key(enc, outputs: tuple[str, ...], input_names: tuple[str, ...], variant: str = "fp32") -> str:
    model = enc.st[0].auto_model
    model_dir = Path(enc.model_name) if Path(enc.model_name).is_dir() else None
    desc = {
        "format": FORMAT_VERSION,
        "model": str(model_dir.resolve()) if model_dir else enc.model_name,
        "config": model.config.to_dict() if hasattr(model.config, "to_dict") else str(model.config),
        "files": model_fingerprint(model_dir) if model_dir else None,
        "params": _param_digest(model),
        "outputs": list(outputs),
        "inputs": list(input_names),
        "opset": OPSET,
        "recipe": _recipe(variant),
    }
    blob = json.dumps(desc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cache_dir(key: str) -> Path:
    """Where the graph with cache key ``key`` lives (see the module docstring)."""
    env = os.environ.get("EMBEDKIT_ONNX_CACHE")
    if env:
        return Path(env).expanduser() / key
    return user_cache_dir("onnx", key)


# -- export ----------------------------------------------------------------------------------------
class _ExportWrapper:
    """Built lazily so importing this module does not import torch."""

    @staticmethod
    def make(model, input_names: tuple[str, ...], outputs: tuple[str, ...]):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                kw = dict(zip(input_names, args))
                out = self.model(**kw, output_hidden_states=True, return_dict=True)
                res = [out.last_hidden_state]
                if "first_hidden_state" in outputs:
                    res.append(out.hidden_states[1])
                if "pooler_output" in outputs:
                    res.append(out.pooler_output)
                return tuple(res)

        # eval() on the wrapper: the exporter restores the wrapper's training flag afterwards,
        # and a fresh Module defaults to training=True, which would switch dropout on in `model`.
        return Wrapper().eval()


_FUSABLE = ("bert", "roberta", "xlm-roberta", "ernie", "electra", "camembert")


class _attn_implementation:
    """Temporarily switch a transformers model's attention implementation (no-op if unsupported)."""

    def __init__(self, model, impl: str):
        self.model, self.impl, self.old = model, impl, None

    def __enter__(self):
        setter = getattr(self.model, "set_attn_implementation", None)
        old = getattr(self.model.config, "_attn_implementation", None)
        if setter is not None and old not in (None, self.impl):
            try:
                setter(self.impl)
                self.old = old
            except Exception:  # noqa: BLE001  # pragma: no cover - model without an eager path
                self.old = None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            self.model.set_attn_implementation(self.old)


def _optimize_in_place(path: str, config) -> None:
    """Fuse BERT-style subgraphs (attention, layer norms, GELU) with ONNX Runtime's offline
    transformer optimizer. Numerically equivalent; skipped for other architectures or on failure."""
    if getattr(config, "model_type", None) not in _FUSABLE:
        return
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        opt = optimize_model(path, model_type="bert", num_heads=int(config.num_attention_heads),
                             hidden_size=int(config.hidden_size), use_gpu=False)
        opt.save_model_to_file(path)
    except Exception as e:  # noqa: BLE001  (the unfused graph is still correct, only slower)
        log.warning("ONNX graph fusion skipped (%s: %s)", type(e).__name__, e)


def export_onnx(enc, path: Path, input_names: tuple[str, ...], outputs: tuple[str, ...], *,
                fuse: bool = True) -> None:
    """Export ``enc``'s transformer to ``path`` (written atomically); ``fuse`` runs ONNX Runtime's
    transformer optimizer on it (its fused kernels are ONNX-Runtime-only)."""
    import torch

    model = enc.st[0].auto_model
    if "pooler_output" in outputs and getattr(model, "pooler", None) is None:
        raise InputError("pooling 'pooler' needs a model with a pooler layer; this one has none "
                         "(use 'cls' instead)")
    was_training = model.training
    model.eval()
    feats = st_tokenize(enc.st, ["embedkit 导出样例句子", "第二句"])
    args = tuple(feats[k].to("cpu") for k in input_names)
    wrapper = _ExportWrapper.make(model, input_names, outputs)
    dyn = {k: {0: "batch", 1: "seq"} for k in input_names}
    for o in outputs:
        dyn[o] = {0: "batch"} if o == "pooler_output" else {0: "batch", 1: "seq"}
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        import warnings

        with atomic_path(path, suffix=".onnx.tmp") as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime's transformer
                # optimizer fuses into its Attention kernel (the SDPA export pattern is not fused).
                with _attn_implementation(model, "eager"):
                    torch.onnx.export(wrapper, args, str(tmp), dynamo=False, input_names=list(input_names),
                                      output_names=list(outputs), dynamic_axes=dyn,
                                      opset_version=OPSET, do_constant_folding=True)
            if fuse:
                _optimize_in_place(str(tmp), model.config)
    finally:
        model.train(was_training)
    log.info("exported %s to ONNX in %.1fs: %s", enc.model_name, time.perf_counter() - t0, path)


def quantize_onnx(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of ``src`` (weights int8, activations quantised at run time).

    The quantizer logs generic advice on the root logger; embedkit leaves logger levels alone (the
    CLI's log handling filters such records)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise InputError("backend 'onnx-int8' needs onnxruntime and onnx: pip install 'embedkit[onnx]'") from e
    t0 = time.perf_counter()
    # Signed int8 weights, per output channel, with reduce_range: on AVX2 CPUs without VNNI the
    # u8*s8 kernels can saturate at full 8-bit range (cosine to fp32 fell to ~0.6 without it).
    # The embedding table stays fp32 (a lookup, no compute to save; quantising it costs accuracy).
    with atomic_path(dst, suffix=".int8.onnx.tmp") as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    log.info("quantised ONNX model to int8 in %.1fs: %s", time.perf_counter() - t0, dst)


def model_inputs(enc) -> tuple[str, ...]:
    """The transformer inputs the tokenizer produces (token_type_ids only for models that use it)."""
    probe = st_tokenize(enc.st, ["样例"])
    return tuple(k for k in MODEL_INPUTS if k in probe)


def _cached(enc, variant: str, outputs, input_names, make) -> Path:
    key = cache_key(enc, outputs, input_names, variant)
    path = cache_dir(key) / "model.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        atomic_write_json(path.parent / "embedkit-onnx.json", {
            "model": enc.model_name, "key": key, "opset": OPSET, "format": FORMAT_VERSION, "variant": variant,
            "inputs": list(input_names), "outputs": list(outputs), "recipe": _recipe(variant)})
    return path


def ensure_model(enc, variant: str = "fp32") -> Path:
    """Return the path of graph ``variant`` (see the module doc) for ``enc``, exporting if needed."""
    _require_onnxruntime()
    _recipe(variant)
    outputs = _outputs_for(enc.pooling)
    names = model_inputs(enc)
    if variant in ("fp32", "plain"):
        return _cached(enc, variant, outputs, names,
                       lambda p: export_onnx(enc, p, names, outputs, fuse=variant == "fp32"))
    if variant == "int8-dynamic":
        src = ensure_model(enc, "fp32")
        return _cached(enc, variant, outputs, names, lambda p: quantize_onnx(src, p))
    from .calibration import quantize_static_onnx

    src = ensure_model(enc, "plain")
    return _cached(enc, variant, outputs, names, lambda p: quantize_static_onnx(enc, src, p, names))
