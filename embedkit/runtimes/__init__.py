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

``"auto"`` is not a runtime but a choice made when the encoder is built: where the hardware computes
bf16 natively ``openvino-bf16`` (CPU, OpenVINO installed) or ``torch-bf16``, else ``torch``
(:func:`embedkit.runtimes.hardware.choose_auto`).

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


def make_runtime(name: str, encoder):
    """Build runtime ``name`` for ``encoder`` (an :class:`embedkit.encoder.Encoder`); ``"auto"`` builds
    the one :func:`embedkit.runtimes.hardware.resolve_auto` picks for ``encoder.device``. Should that
    be ``openvino-bf16`` and the model's graph cannot be exported or compiled, ``auto`` says why (a
    warning) and takes the torch runtime it would have picked without OpenVINO."""
    if name != AUTO_RUNTIME:
        return runtime_class(name)(encoder)
    from .hardware import choose_auto, resolve_auto, torch_native_bf16

    name = resolve_auto(encoder.device)
    try:
        return runtime_class(name)(encoder)
    except Exception as e:
        if name != "openvino-bf16":
            raise
        fallback = choose_auto(encoder.device, openvino_bf16=False, torch_bf16=torch_native_bf16(encoder.device))
        log.warning("backend auto: %s is unavailable for %s (%s: %s); using %s", name, encoder.model_name,
                    type(e).__name__, e, fallback)
        return runtime_class(fallback)(encoder)
