"""What the machine computes natively, asked of the libraries themselves (no CPU-flag parsing here)."""

from __future__ import annotations


def torch_native_bf16(device: str | None) -> bool:
    """Whether torch runs bf16 matrix products in hardware on ``device``: a CUDA device with bf16
    support, or a CPU with AMX tiles or AVX512-BF16 (where oneDNN's bf16 kernels beat fp32)."""
    import torch

    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if not _on_cpu(device):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


def openvino_native_bf16() -> bool:
    """Whether OpenVINO (with the ONNX export it compiles from) is installed and its CPU plugin lists
    BF16 among its optimisation capabilities."""
    from importlib.util import find_spec

    if any(find_spec(name) is None for name in ("openvino", "onnxruntime", "onnx")):
        return False
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_auto(device: str | None, *, openvino_bf16: bool, torch_bf16: bool) -> str:
    """The decision behind ``backend="auto"``, from what the machine can do: OpenVINO in bf16 (CPU
    only; the fastest runtime of the README's encoding table with unchanged Spearman), else torch under
    bf16 autocast, else fp32 torch."""
    if _on_cpu(device) and openvino_bf16:
        return "openvino-bf16"
    return "torch-bf16" if torch_bf16 else "torch"


def resolve_auto(device: str | None) -> str:
    """The runtime ``backend="auto"`` means on this machine (see :func:`choose_auto`)."""
    return choose_auto(device, openvino_bf16=_on_cpu(device) and openvino_native_bf16(),
                       torch_bf16=torch_native_bf16(device))


def _on_cpu(device: str | None) -> bool:
    return str(device or "cpu").startswith("cpu")
