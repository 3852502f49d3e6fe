"""ONNX Runtime runtimes (CPU): ``onnx`` (fp32, fused), ``onnx-int8`` (dynamic int8) and
``onnx-int8-static`` (static int8 QDQ, calibrated). Graphs come from :mod:`.onnx_export`."""

from __future__ import annotations

from .graph import GraphRuntime
from .onnx_export import _require_onnxruntime, ensure_model


class OnnxRuntime(GraphRuntime):
    """One ONNX Runtime session per encoder; threads are the session's own (intra-op)."""

    name = "onnx"
    variant = "fp32"

    def __init__(self, encoder):
        super().__init__(encoder)
        ort = _require_onnxruntime()
        self.path = ensure_model(encoder, self.variant)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.default_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, features):
        return dict(zip(self.output_names, self.session.run(self.output_names, self.feeds(features))))


class OnnxInt8Runtime(OnnxRuntime):
    name = "onnx-int8"
    variant = "int8-dynamic"


class OnnxInt8StaticRuntime(OnnxRuntime):
    name = "onnx-int8-static"
    variant = "int8-static"
