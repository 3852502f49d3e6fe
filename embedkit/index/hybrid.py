"""Search modes over one index: ``dense`` (vectors), ``lexical`` (Chinese BM25) and ``hybrid`` (both,
fused), and the fusion weight tuned on labelled pairs.

Hybrid search fuses the dense and lexical top lists (each ``max(k, DEPTH)`` deep) by the method in
the manifest's ``fusion``: ``weighted`` (dense weight × min-max-normalised dense score + the rest ×
normalised BM25; the weight tuned on labelled pairs, :func:`tune_fusion`) or ``rrf``. A tuned
weight is the default because a fixed one hurts some corpora (see the README).
"""

from __future__ import annotations

import logging

import numpy as np

from ..constants import SEARCH_MODES
from ..errors import InputError

log = logging.getLogger(__name__)

MODES = SEARCH_MODES
DEPTH = 50                      # per-side list depth fused by hybrid search
DEFAULT_WEIGHT = 0.7            # used only when no tuning pairs were given (logged)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


def require_lexical(idx) -> None:
    if getattr(idx.store, "lexical", None) is None:
        raise InputError(f"the index in {str(idx.directory)!r} has no lexical part, so lexical and hybrid search "
                         f"are not available; add it with `embedkit index lexical {idx.directory}` "
                         "(or build with --lexical)")


def lexical_hits(idx, queries: list[str], k: int, flt):
    require_lexical(idx)
    return idx.store.search_lexical(queries, k, flt)


def hybrid_hits(idx, queries: list[str], dense: list[list[tuple]], k: int, flt):
    """Fused ``(score, id, text, metadata, passage)`` rows: ``dense`` are the queries' document rows
    (at least ``max(k, DEPTH)`` deep, each document once, a passage index's with their best passage)."""
    from ..fusion import fuse
    from .results import lexical_documents

    require_lexical(idx)
    depth = max(k, DEPTH)
    lexical = [lexical_documents(r) for r in idx.store.search_lexical(queries, depth, flt)]
    cfg = idx.manifest.get("fusion") or {"method": "weighted", "weight": DEFAULT_WEIGHT}
    docs = {}
    for row in list(lexical) + list(dense):  # dense last: its rows carry the best passage
        for r in row:
            docs[r[1]] = (r[2], r[3], r[4] if len(r) > 4 else None)
    fused = fuse([[(r[0], r[1]) for r in row] for row in dense], [[(s, i) for s, i, _, _ in row] for row in lexical],
                 method=cfg.get("method", "weighted"), weight=float(cfg.get("weight", DEFAULT_WEIGHT)), top_k=k)
    return [[(s, i, *docs[i]) for s, i in row] for row in fused]


def tune_fusion(query_path, pairs_path, *, method: str = "weighted") -> dict:
    """The ``fusion`` manifest entry: the dense weight that maximises MRR@10 on labelled pairs, under the
    pairs → retrieval protocol (corpus = unique sentence2, queries = sentence1 with a positive pair)."""
    from ..calibration import read_labelled_pairs
    from ..evaluation.retrieval import exact_search, retrieval_set
    from ..fusion import tune_weight
    from ..lexical import BM25Index

    if method == "rrf":
        return {"method": "rrf", "tuned_on": None}
    pairs = read_labelled_pairs(pairs_path)
    rs = retrieval_set(pairs)
    if not rs.queries:
        raise InputError(f"tuning pairs {str(pairs_path)!r} have no positive pair, so no query to tune on")
    corpus = query_path.embed(rs.corpus, show_progress_bar=False)
    queries = query_path.embed(rs.queries, show_progress_bar=False)
    depth = min(len(rs.corpus), 100)
    scores, rows = exact_search(corpus, queries, depth)
    dense = [[(float(s), int(r)) for s, r in zip(srow, rrow)] for srow, rrow in zip(scores, rows)]
    bm = BM25Index().fit(np.arange(len(rs.corpus)), rs.corpus)
    lexical = bm.search(rs.queries, depth)
    best = tune_weight(dense, lexical, rs.relevant)
    log.info("fusion weight %.1f (MRR@10 %.4f on %d queries from %s)", best["weight"], best["score"], len(rs.queries),
             pairs_path)
    return {"method": "weighted", "weight": best["weight"], "tuned_on": str(pairs_path),
            "tuning_queries": len(rs.queries), "mrr@10": round(float(best["score"]), 5),
            "grid": [{"weight": g["weight"], "mrr@10": round(float(g["score"]), 5)} for g in best["grid"]]}


def default_fusion() -> dict:
    log.warning("no --tune-pairs given: hybrid search uses dense weight %.1f; tune it on labelled pairs of your "
                "corpus (`embedkit index lexical DIR --tune-pairs FILE`): a fixed weight can hurt", DEFAULT_WEIGHT)
    return {"method": "weighted", "weight": DEFAULT_WEIGHT, "tuned_on": None}


def add_lexical(idx, *, tune_pairs=None) -> None:
    """Add the lexical part to ``idx`` (an EmbedIndex), compacting first; set the fusion weight."""
    import shutil

    from . import directory as dirs

    if not idx.store.LOCAL:
        raise InputError("lexical and hybrid search need a FAISS-backed index; this one lives in "
                         f"{idx.manifest['index'].get('backend')}")
    fusion = tune_fusion(idx.query_path, tune_pairs) if tune_pairs else None
    with idx._lock, dirs.writer_lock(idx.directory):
        idx._reload_locked(None)
        idx._compact_locked()
        tmp = dirs.new_tmp(idx.directory)
        try:
            dirs.link_files(idx.generation, tmp)
            store = idx.store if idx.store.lexical is not None else idx.store.with_lexical(tmp)
            fusion = fusion or idx.manifest.get("fusion") or default_fusion()
            idx._publish(tmp, store, next_iid=int(idx.manifest["next_iid"]), fusion=fusion)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
