"""Held-back scores with embedkit's own evaluation code.

Labelled pairs are scored like ``embedkit eval`` scores a split: cosine of each pair against the gold
label, Spearman (:class:`embedkit.evaluation.evaluator.STSEvaluator`). Query/positive pairs are scored as
retrieval: each distinct query searches the distinct positives exactly, MRR@10 with
:func:`embedkit.evaluation.retrieval.ir_metrics`. Works with any model that has a sentence-transformers
``encode()`` (the model being trained) or an embedkit :class:`~embedkit.encoder.Encoder`."""

from __future__ import annotations

import numpy as np

from .data import TrainingPairs


def metric_name(valid: TrainingPairs) -> str:
    return "spearman" if valid.labelled else "mrr@10"


def valid_score(model, valid: TrainingPairs, *, batch_size: int = 64) -> dict:
    """``{"metric", "score", ...}``: Spearman for labelled pairs, MRR@10 for query/positive pairs (fractions)."""
    if valid.labelled:
        from ..evaluation.evaluator import STSEvaluator

        res = STSEvaluator(valid.sentences1, valid.sentences2, valid.labels, batch_size=batch_size,
                           show_progress_bar=False)(model)
        return {"metric": "spearman", "score": float(res["spearman"]), "pearson": float(res["pearson"]),
                "n_pairs": int(res["n_pairs"])}
    return _retrieval_score(model, valid, batch_size)


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    if hasattr(model, "describe"):  # an embedkit Encoder
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize=True, show_progress_bar=False))
    return np.asarray(model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                                   normalize_embeddings=True), dtype=np.float32)


def _retrieval_score(model, valid: TrainingPairs, batch_size: int) -> dict:
    from ..evaluation.retrieval import exact_search, ir_metrics

    corpus_index: dict[str, int] = {}
    rel: dict[str, list[int]] = {}
    for q, p in zip(valid.sentences1, valid.sentences2):
        d = corpus_index.setdefault(p, len(corpus_index))
        docs = rel.setdefault(q, [])
        if d not in docs:
            docs.append(d)
    queries = list(rel)
    docs_v = _encode(model, list(corpus_index), batch_size)
    q_v = _encode(model, queries, batch_size)
    _, ids = exact_search(docs_v, q_v, 10)
    res = ir_metrics([list(r) for r in ids], [rel[q] for q in queries])
    return {"metric": "mrr@10", "score": float(res["mrr@10"]), "recall@1": float(res["recall@1"]),
            "recall@10": float(res["recall@10"]), "n_queries": len(queries), "n_corpus": len(corpus_index)}
