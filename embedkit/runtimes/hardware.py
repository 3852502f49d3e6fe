"""What the machine is and computes natively: the CPU's identity (model name and the vector-instruction
flags that change which kernels run, for cache keys and benchmark records) and bf16 support, asked of
the libraries themselves. No choice is made from flags: ``backend="auto"`` measures
(:mod:`embedkit.runtimes.measure`)."""

from __future__ import annotations

import os
import platform

#: The CPU flags that decide which int8 / bf16 kernels the libraries run.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile",
                "asimd", "sve", "i8mm", "bf16")


def cpu_identity() -> dict:
    """``{"cpu": model name, "cpu_flags": [the KERNEL_FLAGS it has], "cores": logical cores}``, read from
    ``/proc/cpuinfo`` (elsewhere: ``platform.processor()`` and no flags)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model name") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(),
            "cpu_flags": [f for f in KERNEL_FLAGS if f in flags], "cores": os.cpu_count()}


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
    """Whether OpenVINO's CPU plugin lists BF16 among its optimisation capabilities (without it, a bf16
    inference precision is emulated and far slower than fp32)."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def native_bf16(runtime: str, device: str | None) -> bool:
    """Whether the bf16 runtime ``runtime`` runs bf16 in hardware on ``device`` (the library's report)."""
    return openvino_native_bf16() if runtime.startswith("openvino") else torch_native_bf16(device)


def _on_cpu(device: str | None) -> bool:
    return str(device or "cpu").startswith("cpu")
