"""ONNX Runtime execution backends for :class:`embedkit.encoder.Encoder` (CPU fast path).

Backends registered here:

* ``onnx``      the model's transformer exported to ONNX (fp32), run by ONNX Runtime;
* ``onnx-int8`` the same graph with dynamic int8 quantisation of its weights
                (``onnxruntime.quantization.quantize_dynamic``).

The transformer (``encoder.st[0].auto_model``) is exported with ``torch.onnx.export`` (TorchScript
exporter, dynamic batch and sequence axes); sentence-transformers' own ONNX route needs
``optimum-onnx``, which conflicts with the transformers version sentence-transformers 6 brings.
The graph returns the last hidden state, plus the first layer's output and/or the pooler output
when the pooling needs them; pooling itself reuses :func:`embedkit.encoder.pool_hidden` (or the
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
import tempfile
import time
from pathlib import Path

import numpy as np

from .encoder import _MODEL_INPUTS, pool_hidden, register_backend
from .errors import InputError
from .fsutil import atomic_write_json

log = logging.getLogger(__name__)

OPSET = 17
FORMAT_VERSION = 1  # bump when the exported graph's layout changes
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


def cache_key(enc, outputs: tuple[str, ...], input_names: tuple[str, ...]) -> str:
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
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    t0 = time.perf_counter()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, tmp, dynamo=False, input_names=list(input_names),
                              output_names=list(outputs), dynamic_axes=dyn, opset_version=OPSET,
                              do_constant_folding=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
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
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".int8.onnx.tmp", dir=dst.parent)
    os.close(fd)
    t0 = time.perf_counter()
    try:
        quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    EXPORT_COUNT["quantize"] += 1
    log.info("quantised ONNX model to int8 in %.1fs: %s", time.perf_counter() - t0, dst)


def ensure_model(enc, quantized: bool) -> Path:
    """Return the path of the (possibly quantised) ONNX graph for ``enc``, exporting if needed."""
    _require_onnxruntime()
    outputs = _outputs_for(enc.pooling)
    probe = enc.tokenize(["样例"])
    input_names = tuple(k for k in _MODEL_INPUTS if k in probe)
    key = cache_key(enc, outputs, input_names)
    d = cache_dir(enc, key)
    fp32 = d / "model.onnx"
    if not fp32.is_file():
        export_onnx(enc, fp32, input_names, outputs)
        atomic_write_json(d / "embedkit-onnx.json", {
            "model": enc.model_name, "key": key, "opset": OPSET, "format": FORMAT_VERSION,
            "inputs": list(input_names), "outputs": list(outputs)})
    if not quantized:
        return fp32
    q = d / "model.int8.onnx"
    if not q.is_file():
        quantize_onnx(fp32, q)
    return q


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
        self.output_names = [o.name for o in self.session.get_outputs()]
        if enc.pooling == "model":
            self._post = [m for i, m in enumerate(enc.st) if i > 0]
        else:
            self._post = None

    def __call__(self, batch: list[str]) -> np.ndarray:
        import torch

        enc = self.enc
        feats = enc.tokenize(batch)
        feed = {k: np.ascontiguousarray(feats[k].cpu().numpy(), dtype=np.int64) for k in self.input_names}
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
