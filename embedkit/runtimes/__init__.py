"""Encoder runtimes: a lazy registry of names -> ``"module:Class"`` strings, resolved on use.

Importing this package imports nothing heavy (no torch, onnxruntime or openvino). The names are
:data:`embedkit.constants.RUNTIMES` (= :data:`RUNTIME_NAMES`), the CLI's choice list. Every runtime follows
:class:`embedkit.runtimes.base.RuntimeProtocol` (tokenize -> forward -> pool, plus token counts).

======================  ==========================================================================
name                    what runs
======================  ==========================================================================
``torch``               the sentence-transformers model in PyTorch (default)
``torch-bf16``          the same model under bf16 autocast (fast on AMX / AVX512-BF16 CPUs)
``onnx``                the transformer exported to ONNX (fp32, fused), ONNX Runtime
``onnx-int8``           the same graph, dynamic int8 quantisation (weights int8, activations at run time)
``onnx-int8-static``    static int8 (QDQ) with activation ranges calibrated on real Chinese sentences
``openvino``            the fp32 ONNX graph compiled by OpenVINO (CPU)
``openvino-bf16``       the same, with OpenVINO's inference precision at bf16
``openvino-int8``       the static int8 (QDQ) graph compiled by OpenVINO (CPU)
======================  ==========================================================================

``"auto"`` is not a runtime but a choice made when the encoder is built, by measurement: every
installed runtime is timed on this machine and checked against fp32, the fastest within 0.5 Spearman
points wins, and the decision is cached per machine and model (:mod:`embedkit.runtimes.measure`).

A runtime outside embedkit is used by passing ``backend="package.module:Class"`` to the Encoder; the
registry itself is read-only (no self-registration at import).
"""

from __future__ import annotations

import logging
from importlib import import_module
from types import MappingProxyType

from ..constants import AUTO_RUNTIME, DEFAULT_RUNTIME
from ..constants import RUNTIMES as RUNTIME_NAMES
from ..errors import InputError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RUNTIME", "RUNTIMES", "RUNTIME_NAMES", "make_runtime", "runtime_class"]

#: name -> "module:Class" for every name in :data:`embedkit.constants.RUNTIMES` (the CLI's choice list).
RUNTIMES = MappingProxyType({
    "torch": "embedkit.runtimes.torch_runtime:TorchRuntime",
    "onnx": "embedkit.runtimes.onnx_runtime:OnnxRuntime",
    "onnx-int8": "embedkit.runtimes.onnx_runtime:OnnxInt8Runtime",
    "onnx-int8-static": "embedkit.runtimes.onnx_runtime:OnnxInt8StaticRuntime",
    "openvino": "embedkit.runtimes.openvino_runtime:OpenVINORuntime",
    "openvino-int8": "embedkit.runtimes.openvino_runtime:OpenVINOInt8Runtime",
    "torch-bf16": "embedkit.runtimes.torch_runtime:TorchBF16Runtime",
    "openvino-bf16": "embedkit.runtimes.openvino_runtime:OpenVINOBF16Runtime",
})


def runtime_class(name: str):
    """The class for ``name``: a key of :data:`RUNTIMES`, or a ``"package.module:Class"`` string for a
    runtime that lives outside embedkit. Its module is imported now, not before."""
    if not isinstance(name, str):
        raise InputError(f"backend must be a string, got {type(name).__name__} ({name!r:.40})")
    target = RUNTIMES.get(name)
    if target is None:
        if ":" not in name:
            raise InputError(f"backend {name!r} is not one of {', '.join(RUNTIMES)}, {AUTO_RUNTIME} "
                             "(or a 'package.module:Class' string)")
        target = name
    module, _, attr = target.partition(":")
    try:
        cls = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as e:
        if name in RUNTIMES:
            raise  # a built-in runtime's own import failure (its message names the missing extra)
        raise InputError(f"backend {name!r}: cannot import {attr!r} from {module!r} ({e})") from e
    return cls


def make_runtime(name: str, encoder, *, auto_bound: float | None = None):
    """Build runtime ``name`` for ``encoder`` (an :class:`embedkit.encoder.Encoder`). ``"auto"`` returns
    the runtime :func:`embedkit.runtimes.measure.auto_runtime` measured (or cached) as the fastest within
    ``auto_bound`` Spearman points of fp32 here; its decision is the runtime's ``auto_decision``."""
    if name != AUTO_RUNTIME:
        return runtime_class(name)(encoder)
    from .measure import DEFAULT_BOUND, auto_runtime

    runtime, decision = auto_runtime(encoder, bound=DEFAULT_BOUND if auto_bound is None else auto_bound)
    runtime.auto_decision = decision
    log.info("backend auto: %s for %s (%s; %s)", decision.choice, encoder.model_name,
             "cached" if decision.cached else f"measured in {decision.seconds:.1f} s",
             ", ".join(f"{m.name} {m.sentences_per_s}/s" if m.skipped is None else f"{m.name} skipped"
                       for m in decision.measurements))
    return runtime
