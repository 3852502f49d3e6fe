"""What the FAISS backends share (the float and the binary one): constants measured by
``scripts/bench_search.py``, the lazy faiss import, metric mapping, input checks, bytes per vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

METRICS = ("cosine", "ip", "l2")

# Defaults measured by scripts/bench_search.py (see README "Performance").
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80  # 1M x 512 builds in ~4 min on 2 cores; recall below is at this value
HNSW_EF_SEARCH = 128  # 1M vectors: recall@10 0.970 (d=512) / 0.967 (d=256), ~210-280x faster than flat
IVF_NPROBE = 16  # nlist 4000 at 1M: recall@10 0.983 (d=512) / 0.982 (d=256), ~150-190x faster than flat
PQ_DIMS_PER_SUBQUANTIZER = 2  # ivf-pq: m = dim / 2 sub-quantizers of 8 bits -> dim/2 bytes per vector (8x smaller)
TOMBSTONE_REBUILD_FRACTION = 0.25
LOSSY = ("PQ", "SQ", "LSH", "RaBitQ")  # codes that do not give the vectors back exactly


def _faiss():
    import faiss

    return faiss


def _faiss_metric(metric: str):
    faiss = _faiss()
    if metric not in METRICS:
        raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def as_f32(x: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"{what} must be 2-D (n, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"{what} have dimension {x.shape[1]}, the index expects {dim}")
    return np.ascontiguousarray(x, dtype=np.float32)


def per_vector(directory, n: int, code: int, *, ram, disk) -> dict:
    """``{"code", "ram", "disk"}`` bytes per vector: ``ram`` / ``disk`` are the sizes of those files of
    a saved base in ``directory`` divided by its ``n`` vectors."""
    directory = Path(directory)

    def size(names):
        return sum((directory / f).stat().st_size for f in names if (directory / f).is_file())

    n = max(1, int(n))
    return {"code": int(code), "ram": round(size(ram) / n, 2), "disk": round(size(disk) / n, 2)}
