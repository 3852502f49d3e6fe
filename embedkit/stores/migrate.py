"""Copy an index directory into a new one over another store (FAISS → Milvus), keeping the query path."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..corpus import Doc
from ..errors import IndexFormatError, InputError
from .faiss_backend import LOSSY


def migrate(src, dst, *, index: str = "milvus", index_params: dict | None = None, overwrite: bool = False,
            chunk_size: int = 4096, encoder=None):
    """Copy the FAISS index directory ``src`` into a new Milvus-backed index directory ``dst``.

    The model, pooling, reducer and metric are kept. Vectors are read back from FAISS where it stores
    them exactly (flat, HNSW, IVF-flat); for lossy codes (PQ, SQ) the stored texts are re-encoded
    through the source index's own query path (this loads the model; ``encoder`` may supply it)."""
    from ..index import EmbedIndex
    from . import store_for_index

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError(f"source and destination are the same directory ({str(src)!r})")
    if store_for_index(index) != "milvus":
        raise InputError(f"index {index!r} is not a Milvus index type (milvus, milvus:hnsw, ...)")
    source = EmbedIndex.load(src, encoder=encoder)
    if not source.store.LOCAL:
        raise InputError(f"{str(src)!r} is already a {source.manifest['index'].get('backend')} index; migrate "
                         "reads a FAISS index")
    t0 = time.perf_counter()
    factory = source.manifest["index"].get("factory", "")
    reencode = any(tag in factory for tag in LOSSY)
    qp = source.query_path
    from ..index.passages import DocTexts, passage_of

    whole = DocTexts(source.store)  # the document text a later passage's row points into

    def batches():
        for rows in source.store.iterate(with_vectors=not reencode, batch=chunk_size):
            docs = [Doc(did, text, meta) for _, did, text, meta, _ in rows]
            if reencode:  # each row's own passage, as the build encoded it
                yield docs, qp.embed([passage_of(d.id, d.text, d.metadata, whole(d.id, d.text))["text"] for d in docs])
            else:
                yield docs, np.stack([r[4] for r in rows]).astype(np.float32)

    n_src = source.store.count()
    extra = {"migrated_from": {"directory": str(src.resolve()), "generation": source.generation.name,
                               "factory": factory, "vectors": "re-encoded" if reencode else "reconstructed"},
             "normalize": source.manifest.get("normalize", "none"),
             **{k: source.manifest[k] for k in ("passages",) if k in source.manifest}}
    idx = EmbedIndex.build_from_vectors(dst, batches(), query_path=qp, index=index, index_params=index_params,
                                        metric=qp.metric, overwrite=overwrite, final_vectors=True,
                                        expected_size=n_src, extra_manifest=extra, passage_rows=True)
    if idx.store.count() != n_src:  # pragma: no cover - internal invariant
        raise IndexFormatError(f"migrated {idx.store.count()} rows, source holds {n_src}")
    idx.manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
    return idx
