"""Shared fixtures. Real models come from ../shared/models (beside the checkout), read in place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

# a real Milvus server process for tests that ask for it (started right after collection)
from ._milvus_server import (milvus_crash_server, milvus_server, pytest_collection_finish,  # noqa: F401
                             pytest_sessionfinish)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads sleep instead of spinning while waiting: FAISS training otherwise slows down by
# 10-50x whenever anything else runs on a 2-core machine. Must be set before faiss/torch load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMBEDKIT_SHARED", ROOT.parent / "shared"))
M3E = SHARED / "models" / "m3e-small"
TINY = SHARED / "models" / "tiny-random-bert-zh"
ALBERT = SHARED / "models" / "albert-tiny-chinese"
STS = SHARED / "data" / "sts-zh"
DEMO_CORPUS = ROOT / "embedkit" / "data" / "demo_zh.jsonl"


def clustered_vectors(n: int, dim: int, *, n_clusters: int = 20, rank: int = 16, noise: float = 0.15,
                      seed: int = 0) -> np.ndarray:
    """Seeded data with realistic structure: Gaussian clusters in a low-rank subspace plus noise."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim))
    centers = rng.standard_normal((n_clusters, rank)) * 2.0
    labels = rng.integers(0, n_clusters, n)
    x = (centers[labels] + rng.standard_normal((n, rank))) @ basis + noise * rng.standard_normal((n, dim)) * 4
    return x.astype(np.float32)


class FakeEncoder:
    """Deterministic stand-in for Encoder in unit tests of other layers (never proof a feature works).

    Texts found in ``table`` map to its vectors; any other text gets a vector seeded by its hash."""

    def __init__(self, dim: int = 32, table: dict[str, np.ndarray] | None = None):
        self._dim = dim
        self.table = table or {}
        self.calls = 0

    @property
    def dim(self) -> int:
        return self._dim

    def describe(self) -> dict:
        return {"model": "fake", "pooling": "model", "max_length": 64, "backend": "torch", "dim": self._dim}

    def encode(self, texts, *, normalize=None, batch_size=None, show_progress_bar=None):
        self.calls += 1
        single = isinstance(texts, str)
        rows = []
        for t in [texts] if single else texts:
            if t in self.table:
                rows.append(np.asarray(self.table[t], dtype=np.float32))
            else:
                seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
                rows.append(np.random.default_rng(seed).standard_normal(self._dim).astype(np.float32))
        out = np.stack(rows) if rows else np.zeros((0, self._dim), np.float32)
        if normalize:
            out = out / np.linalg.norm(out, axis=1, keepdims=True)
        return out[0] if single else out


@pytest.fixture(scope="session")
def m3e_encoder():
    from embedkit.encoder import Encoder

    return Encoder(str(M3E))


@pytest.fixture(scope="session")
def tiny_encoder():
    from embedkit.encoder import Encoder

    return Encoder(str(TINY))
