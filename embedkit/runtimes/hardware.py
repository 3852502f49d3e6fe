"""What the machine computes natively, asked of the libraries themselves (no CPU-flag parsing here)."""

from __future__ import annotations


def torch_native_bf16(device: str | None) -> bool:
    """Whether torch runs bf16 matrix products in hardware on ``device``: a CUDA device with bf16
    support, or a CPU with AMX tiles or AVX512-BF16 (where oneDNN's bf16 kernels beat fp32)."""
    import torch

    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if not dev.startswith("cpu"):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


def openvino_native_bf16(core) -> bool:
    """Whether OpenVINO's CPU plugin lists BF16 among its optimisation capabilities."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_auto(device: str | None) -> str:
    """The runtime ``backend="auto"`` means on this machine: torch-bf16 where bf16 is native, else torch."""
    return "torch-bf16" if torch_native_bf16(device) else "torch"
