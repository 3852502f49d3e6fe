"""Parquet shards written by ``embedkit encode --engine ray``: the manifest and reading vectors back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import InputError

FORMAT = "embedkit-vectors"
SHARD_MANIFEST = "_embedkit.json"


def read_shard_manifest(directory) -> dict:
    p = Path(directory) / SHARD_MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{str(directory)!r} is not a finished `embedkit encode --engine ray` output "
                         f"(no {SHARD_MANIFEST})") from None
    if m.get("format") != FORMAT:
        raise InputError(f"{p} is not an embedkit vectors manifest")
    return m


def iter_shards(directory, batch_rows: int = 4096):
    """Yield (ids, vectors, texts|None, metadata|None) batches from the shards, file by file."""
    import pyarrow.parquet as pq

    read_shard_manifest(directory)
    for f in sorted(Path(directory).glob("*.parquet")):
        pf = pq.ParquetFile(f)
        for b in pf.iter_batches(batch_size=batch_rows):
            vec = b.column("vector")
            dim = vec.type.list_size
            vecs = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
            names = b.schema.names
            texts = b.column("text").to_pylist() if "text" in names else None
            metas = b.column("metadata").to_pylist() if "metadata" in names else None
            yield b.column("id").to_pylist(), vecs, texts, metas


def read_vectors(directory) -> tuple[list[str], np.ndarray]:
    """All ids and vectors of a shard directory (for tests and small outputs)."""
    ids, parts = [], []
    for i, v, _, _ in iter_shards(directory):
        ids += i
        parts.append(v)
    return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))


def shard_batches(directory, chunk_size: int):
    """``(documents, raw vectors)`` batches read back from Parquet shards written with ``keep_text``."""
    from .corpus import Doc

    docs, vecs = [], []
    for ids, vv, texts, metas in iter_shards(directory):
        if texts is None:
            raise InputError(f"shards in {str(directory)!r} hold no texts (encode them with keep_text)")
        for i, t, m, v in zip(ids, texts, metas, vv):
            docs.append(Doc(i, t, None if m is None else json.loads(m)))
            vecs.append(v)
            if len(docs) >= chunk_size:
                yield docs, np.stack(vecs).astype(np.float32)
                docs, vecs = [], []
    if docs:
        yield docs, np.stack(vecs).astype(np.float32)


