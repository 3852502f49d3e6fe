"""Static int8 quantisation of an exported graph, with activation ranges calibrated on real sentences.

Calibration text: the Chinese sentences of embedkit's packaged demo corpus
(``embedkit/data/demo_zh.jsonl``: short questions and statements over ten everyday topics), tokenised
by the encoder itself in batches as the runtime will see them. The graph is first shape-inferred
(``quant_pre_process``), then ``quantize_static`` writes QDQ pairs around the MatMuls (attention
projections, the two attention products, the feed-forward up-projection): unsigned int8 activations
with MinMax ranges, signed weights per output channel with reduce_range (7 bits). Embeddings, layer
norms, softmax, GELU and the feed-forward down-projections stay float32.

* reduce_range: on x86 CPUs without VNNI (AVX2 only), u8 x s8 products go through ``vpmaddubsw``,
  whose int16 pair sums saturate with full-range weights (ONNX Runtime and OpenVINO alike lost 3-4
  Spearman points on such a CPU); 7-bit weights cannot saturate, on any CPU.
* the down-projections (MatMuls fed by the activation function): the GELU output is mostly near
  zero with a long positive tail, too coarse for 8 bits; with reduce_range alone a probe still lost
  close to a point, with both the runtimes stay within 0.5 points (``scripts/bench_encode.py``,
  ``scripts/benchmarks/encode_avx2.json``: min cosine to fp32 0.994-0.995).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_path
from .base import st_tokenize

log = logging.getLogger(__name__)

CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "data" / "demo_zh.jsonl"
CALIBRATION_BATCH = 32
CALIBRATION_SENTENCES = 256
#: Everything that determines the int8-static graph (part of its cache key).
STATIC_RECIPE = (f"static-qdq-u8act-s8w-reduce-range-per-channel-minmax-matmul-ffn-down-float"
                 f"-demo_zh[{CALIBRATION_SENTENCES}]-batch{CALIBRATION_BATCH}")
#: Op types whose output, fed to a MatMul, marks a feed-forward down-projection (GELU exported at
#: opset 17 ends in a Mul: x * 0.5 * (1 + erf(x / sqrt(2)))).
ACTIVATION_OPS = ("Mul", "Gelu", "Relu")


def calibration_sentences(n: int = CALIBRATION_SENTENCES) -> list[str]:
    """The first ``n`` texts of the packaged demo corpus."""
    out = []
    with open(CALIBRATION_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def calibration_feeds(enc, input_names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """Tokenised calibration batches (int64 numpy arrays by input name)."""
    texts = calibration_sentences()
    feeds = []
    for i in range(0, len(texts), CALIBRATION_BATCH):
        feats = st_tokenize(enc.st, texts[i:i + CALIBRATION_BATCH])
        feeds.append({k: np.ascontiguousarray(feats[k].cpu().numpy(), dtype=np.int64) for k in input_names})
    return feeds


def ffn_down_projections(path: Path) -> list[str]:
    """Names of the MatMuls in graph ``path`` whose input is an activation function's output."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and producer.get(n.input[0]) in ACTIVATION_OPS]


def quantize_static_onnx(enc, src: Path, dst: Path, input_names: tuple[str, ...]) -> None:
    """Write the static int8 (QDQ) version of graph ``src`` to ``dst`` (atomically)."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise InputError("static int8 quantisation needs onnxruntime and onnx: pip install 'embedkit[onnx]'") from e

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embedkit-calib-") as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        with atomic_path(dst, suffix=".int8s.onnx.tmp") as tmp:
            quantize_static(str(pre), str(tmp), Reader(calibration_feeds(enc, input_names)),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                            nodes_to_exclude=ffn_down_projections(pre), per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True})
    log.info("quantised ONNX model to static int8 in %.1fs: %s", time.perf_counter() - t0, dst)
