"""OpenVINO runtimes (CPU): the exported ONNX graph compiled by OpenVINO.

* ``openvino``       the unfused fp32 graph (OpenVINO applies its own fusions);
* ``openvino-bf16``  the same graph with OpenVINO's inference precision at bf16 (AMX / AVX512-BF16);
* ``openvino-int8``  the static int8 QDQ graph (:mod:`.calibration`), run with OpenVINO's int8 kernels.

Threads: ``INFERENCE_NUM_THREADS`` of this compiled model only; latency hint (one request at a time,
as the encoder calls it)."""

from __future__ import annotations

import threading

from .base import require_extra
from .graph import GraphRuntime
from .onnx_export import ensure_model


def _require_openvino():
    return require_extra("openvino", "openvino", "OpenVINO", "openvino")


class OpenVINORuntime(GraphRuntime):
    name = "openvino"
    variant = "plain"
    precision = "f32"  # INFERENCE_PRECISION_HINT

    def __init__(self, encoder):
        super().__init__(encoder)
        ov = _require_openvino()
        self.path = ensure_model(encoder, self.variant)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", {
            "INFERENCE_NUM_THREADS": self.default_threads(), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": self.precision})
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns
        self.input_names = [next(iter(p.get_names())) for p in self.compiled.inputs]
        self._outputs = [(next(iter(o.get_names())), o) for o in self.compiled.outputs]

    def forward(self, features):
        feeds = self.feeds(features)
        with self._lock:
            res = self.request.infer(feeds)
            # copy out: the request reuses its output buffers on the next call
            return {name: res[port].copy() for name, port in self._outputs}

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision}


class OpenVINOBF16Runtime(OpenVINORuntime):
    """fp32 weights, computed in bf16 where the CPU has native bf16 (OpenVINO's own choice of which
    operations stay fp32); on other CPUs OpenVINO keeps fp32."""

    name = "openvino-bf16"
    precision = "bf16"


class OpenVINOInt8Runtime(OpenVINORuntime):
    name = "openvino-int8"
    variant = "int8-static"
