"""ONNX Runtime execution backends for :class:`embedkit.encoder.Encoder` (CPU fast path).

Backends registered here:

* ``onnx``      the model's transformer exported to ONNX (fp32), run by ONNX Runtime;
* ``onnx-int8`` the same graph with dynamic int8 quantisation
                (``onnxruntime.quantization.quantize_dynamic``: int8 weights per output channel
                with reduced range, activations quantised at run time). Slightly less accurate:
                see ``scripts/bench_encode.py`` for its Spearman cost.

The transformer (``encoder.st[0].auto_model``) is exported with ``torch.onnx.export`` (TorchScript
exporter, dynamic batch and sequence axes); sentence-transformers' own ONNX route needs
``optimum-onnx``, which conflicts with the transformers version sentence-transformers 6 brings.
The graph returns the last hidden state, plus the first layer's output and/or the pooler output
when the pooling needs them. BERT-style graphs are then fused by ONNX Runtime's offline transformer
optimizer (attention, skip-layer-norm, bias-GELU kernels). Pooling itself reuses :func:`embedkit.encoder.pool_hidden` (or the
model's own sentence-transformers modules for ``pooling="model"``), so results match the torch path.

Exports are cached, keyed by the model's identity (name, config, weight files, a digest of the
parameters), the exported outputs, the opset and whether the graph is quantised:

1. ``$EMBEDKIT_ONNX_CACHE/<key>/`` when that variable is set;
2. ``<model dir>/onnx/embedkit-<key>/`` when the model is a local directory we may write to;
3. ``$XDG_CACHE_HOME/embedkit/onnx/<key>/`` (default ``~/.cache/embedkit/onnx/<key>/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from pathlib import Path

import numpy as np

from .encoder import _MODEL_INPUTS, pool_hidden, register_backend
from .errors import InputError
from .fsutil import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

OPSET = 17
FORMAT_VERSION = 2  # bump when the exported graph's layout changes
# Dynamic quantisation settings of the onnx-int8 graph (part of its cache key).
QUANT_RECIPE = "dynamic-s8-per-channel-reduce-range-matmul-attention"
INSTALL_HINT = "pip install 'embedkit[onnx]'"

# How many exports/quantisations this process performed (tests use it to check cache reuse).
EXPORT_COUNT = {"export": 0, "quantize": 0}


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise InputError(f"backend 'onnx' needs ONNX Runtime, which is not installed: {INSTALL_HINT}") from e
    return onnxruntime


def _outputs_for(pooling: str) -> tuple[str, ...]:
    outs = ["last_hidden_state"]
    if pooling == "first-last-avg":
        outs.append("first_hidden_state")
    if pooling == "pooler":
        outs.append("pooler_output")
    return tuple(outs)


# -- cache location and key ------------------------------------------------------------------------
def _weights_identity(model_dir: Path | None) -> list:
    if model_dir is None or not model_dir.is_dir():
        return []
    ident = []
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".h5") or p.name == "config.json":
            st = p.stat()
            ident.append([p.name, st.st_size, st.st_mtime_ns])
    return ident


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


def cache_key(enc, outputs: tuple[str, ...], input_names: tuple[str, ...], quantized: bool) -> str:
    model = enc.st[0].auto_model
    model_dir = Path(enc.model_name) if Path(enc.model_name).is_dir() else None
    desc = {
        "format": FORMAT_VERSION,
        "model": str(model_dir.resolve()) if model_dir else enc.model_name,
        "config": model.config.to_dict() if hasattr(model.config, "to_dict") else str(model.config),
        "files": _weights_identity(model_dir),
        "params": _param_digest(model),
        "outputs": list(outputs),
        "inputs": list(input_names),
        "opset": OPSET,
        "quantize": QUANT_RECIPE if quantized else None,
    }
    blob = json.dumps(desc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _writable(d: Path) -> bool:
    # Mode bits as well as access(): root may write anywhere, but a directory marked read-only
    # (such as shared model folders) should still be left alone.
    try:
        mode = d.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IWUSR) and os.access(d, os.W_OK | os.X_OK)


def cache_dir(enc, key: str) -> Path:
    env = os.environ.get("EMBEDKIT_ONNX_CACHE")
    if env:
        return Path(env).expanduser() / key
    model_dir = Path(enc.model_name)
    if model_dir.is_dir():
        onnx_dir = model_dir / "onnx"
        if (onnx_dir.is_dir() and _writable(onnx_dir)) or (not onnx_dir.exists() and _writable(model_dir)):
            return onnx_dir / f"embedkit-{key}"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embedkit" / "onnx" / key


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
            except Exception:  # pragma: no cover - model without an eager path
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
    except Exception as e:  # the unfused graph is still correct, only slower
        log.warning("ONNX graph fusion skipped (%s: %s)", type(e).__name__, e)


def export_onnx(enc, path: Path, input_names: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    """Export ``enc``'s transformer to ``path`` (written atomically)."""
    import torch

    model = enc.st[0].auto_model
    if "pooler_output" in outputs and getattr(model, "pooler", None) is None:
        raise InputError("pooling 'pooler' needs a model with a pooler layer; this one has none "
                         "(use 'cls' instead)")
    was_training = model.training
    model.eval()
    feats = enc.tokenize(["embedkit 导出样例句子", "第二句"])
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
            _optimize_in_place(str(tmp), model.config)
    finally:
        model.train(was_training)
    EXPORT_COUNT["export"] += 1
    log.info("exported %s to ONNX in %.1fs: %s", enc.model_name, time.perf_counter() - t0, path)


def quantize_onnx(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of ``src`` (weights int8, activations quantised at run time)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise InputError(f"backend 'onnx-int8' needs onnxruntime and onnx: {INSTALL_HINT}") from e
    t0 = time.perf_counter()
    import onnx

    # Signed int8 weights, per output channel, with reduce_range: on AVX2 CPUs without VNNI the
    # u8*s8 kernels can saturate at full 8-bit range (cosine to fp32 fell to ~0.6 without it).
    # The embedding table stays fp32 (a lookup, no compute to save; quantising it costs accuracy).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's generic "consider pre-processing" warning
    try:
        with atomic_path(dst, suffix=".int8.onnx.tmp") as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True, op_types_to_quantize=["MatMul", "Attention"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    EXPORT_COUNT["quantize"] += 1
    log.info("quantised ONNX model to int8 in %.1fs: %s", time.perf_counter() - t0, dst)


def ensure_model(enc, quantized: bool) -> Path:
    """Return the path of the (possibly quantised) ONNX graph for ``enc``, exporting if needed."""
    _require_onnxruntime()
    outputs = _outputs_for(enc.pooling)
    probe = enc.tokenize(["样例"])
    input_names = tuple(k for k in _MODEL_INPUTS if k in probe)
    key = cache_key(enc, outputs, input_names, quantized=False)
    fp32 = cache_dir(enc, key) / "model.onnx"
    if not fp32.is_file():
        export_onnx(enc, fp32, input_names, outputs)
        _write_meta(fp32.parent, enc, key, input_names, outputs, None)
    if not quantized:
        return fp32
    qkey = cache_key(enc, outputs, input_names, quantized=True)
    q = cache_dir(enc, qkey) / "model.onnx"
    if not q.is_file():
        q.parent.mkdir(parents=True, exist_ok=True)
        quantize_onnx(fp32, q)
        _write_meta(q.parent, enc, qkey, input_names, outputs, QUANT_RECIPE)
    return q


def _write_meta(d: Path, enc, key: str, input_names, outputs, quantize) -> None:
    atomic_write_json(d / "embedkit-onnx.json", {
        "model": enc.model_name, "key": key, "opset": OPSET, "format": FORMAT_VERSION,
        "inputs": list(input_names), "outputs": list(outputs), "quantize": quantize})


# -- runner ----------------------------------------------------------------------------------------
class OnnxRunner:
    """Runs one batch through ONNX Runtime and pools it like the torch runner does."""

    def __init__(self, enc, quantized: bool = False):
        ort = _require_onnxruntime()
        import torch

        if enc.device not in (None, "cpu") and not str(enc.device).startswith("cpu"):
            log.warning("backend onnx runs on the CPU (device %r ignored)", enc.device)
        self.enc = enc
        self.quantized = quantized
        self.path = ensure_model(enc, quantized)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=so,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._input_dtypes = {i.name: (np.int32 if i.type == "tensor(int32)" else np.int64)
                              for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        if enc.pooling == "model":
            self._post = [m for i, m in enumerate(enc.st) if i > 0]
        else:
            self._post = None

    def __call__(self, batch: list[str]) -> np.ndarray:
        import torch

        enc = self.enc
        feats = enc.tokenize(batch)
        feed = {k: np.ascontiguousarray(feats[k].cpu().numpy(), dtype=self._input_dtypes[k])
                for k in self.input_names}
        outs = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        last = torch.from_numpy(outs["last_hidden_state"])
        mask = feats["attention_mask"].cpu()
        with torch.inference_mode():
            if self._post is not None:
                features = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in feats.items()}
                features["token_embeddings"] = last
                for module in self._post:
                    features = module(features)
                emb = features["sentence_embedding"]
            else:
                if enc.pooling == "first-last-avg":
                    # pool_hidden reads [1] (first layer) and [-1] (last); [0] is the embeddings
                    hidden = (None, torch.from_numpy(outs["first_hidden_state"]), last)
                else:
                    hidden = (last,)
                pooler = outs.get("pooler_output")
                emb = pool_hidden(enc.pooling, hidden, mask,
                                  torch.from_numpy(pooler) if pooler is not None else None)
        return np.ascontiguousarray(emb.float().numpy(), dtype=np.float32)


register_backend("onnx", lambda enc: OnnxRunner(enc, quantized=False))
register_backend("onnx-int8", lambda enc: OnnxRunner(enc, quantized=True))
