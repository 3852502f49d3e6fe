"""Retrieval evaluation on labelled pairs: the pairs -> retrieval protocol, IR metrics (via ir-measures,
i.e. trec_eval), and dense search over a FAISS index or exact numpy.

The protocol, for one split of labelled pairs:

* corpus   = the unique sentence2 texts;
* queries  = the unique sentence1 texts with at least one positive pair (label 1 on 0/1 tasks,
  label >= 4 on 0-5 scales such as STS-B);
* relevant = the sentence2 texts of the query's positive pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .data import PairSet

METRICS = ("mrr@10", "recall@1", "recall@10", "ndcg@10")
SCALE_THRESHOLD = 4.0  # positives on a 0-5 similarity scale


@dataclass
class RetrievalSet:
    """One split turned into a retrieval task (``relevant[q]`` are indices into ``corpus``)."""

    task: str
    split: str
    corpus: list[str]
    queries: list[str]
    relevant: list[list[int]]
    threshold: float
    n_pairs: int = 0
    n_positive_pairs: int = 0
    n_queries_total: int = 0  # before ``max_queries``
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"task": self.task, "split": self.split, "n_corpus": len(self.corpus),
                "n_queries": len(self.queries), "n_queries_total": self.n_queries_total,
                "n_pairs": self.n_pairs, "n_positive_pairs": self.n_positive_pairs,
                "positive_if_label_ge": self.threshold,
                "mean_relevant": float(np.mean([len(r) for r in self.relevant])) if self.relevant else 0.0}


def positive_threshold(labels) -> float:
    """1 for 0/1 labels, 4 for a 0-5 scale (any label above 1)."""
    y = np.asarray(labels, dtype=np.float64)
    return SCALE_THRESHOLD if y.size and float(y.max()) > 1.0 else 1.0


def retrieval_set(pairs: PairSet, *, threshold: float | None = None,
                  max_queries: int | None = None) -> RetrievalSet:
    """Build the retrieval task of one split; ``max_queries`` keeps the first N queries (the corpus
    stays whole)."""
    if max_queries is not None and (isinstance(max_queries, bool) or not isinstance(max_queries, int)
                                    or max_queries <= 0):
        raise InputError(f"max_queries must be a positive integer, got {max_queries!r}")
    thr = positive_threshold(pairs.scores) if threshold is None else float(threshold)
    corpus_index: dict[str, int] = {}
    for t in pairs.sentences2:
        corpus_index.setdefault(t, len(corpus_index))
    rel: dict[str, list[int]] = {}
    n_pos = 0
    for a, b, y in zip(pairs.sentences1, pairs.sentences2, pairs.scores.tolist()):
        if y >= thr:
            n_pos += 1
            docs = rel.setdefault(a, [])
            d = corpus_index[b]
            if d not in docs:
                docs.append(d)
    if not rel:
        raise InputError(f"{pairs.task}-{pairs.split}: no positive pairs (label >= {thr:g}), so no "
                         "retrieval queries")
    queries = list(rel)
    total = len(queries)
    if max_queries is not None:
        queries = queries[:max_queries]
    return RetrievalSet(task=pairs.task, split=pairs.split, corpus=list(corpus_index), queries=queries,
                        relevant=[rel[q] for q in queries], threshold=thr, n_pairs=len(pairs),
                        n_positive_pairs=n_pos, n_queries_total=total)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def ir_metrics(rankings, relevant, *, per_query: bool = False) -> dict:
    """MRR@10, Recall@1, Recall@10 and nDCG@10 (binary relevance) with ir-measures (trec_eval).

    ``rankings[q]``: document ids best first (a query may have no results: it scores 0);
    ``relevant[q]``: its relevant ids.  Means are over every query.  ``per_query=True`` adds
    ``{"per_query": {metric: array}}``."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    if len(rankings) != len(relevant):
        raise InputError(f"got rankings for {len(rankings)} queries and relevance for {len(relevant)}")
    n = len(rankings)
    if n == 0:
        raise InputError("no queries to score")
    measures = {"mrr@10": RR @ 10, "recall@1": R @ 1, "recall@10": R @ 10, "ndcg@10": nDCG @ 10}
    qrels = {}
    run = {}
    for q, (docs, rel) in enumerate(zip(rankings, relevant)):
        rel = list(rel)
        if not rel:
            raise InputError(f"query {q} has no relevant documents; every scored query needs one")
        qrels[str(q)] = {str(d): 1 for d in rel}
        ranked = list(dict.fromkeys(docs))
        if ranked:  # the run's scores encode our order exactly (trec_eval sorts by score)
            run[str(q)] = {str(d): float(len(ranked) - i) for i, d in enumerate(ranked)}
    values = {name: np.zeros(n) for name in measures}
    by_measure = {m: name for name, m in measures.items()}
    if run:
        for r in ir_measures.iter_calc(list(measures.values()), qrels, run):
            values[by_measure[r.measure]][int(r.query_id)] = r.value
    out: dict = {name: float(v.mean()) for name, v in values.items()}
    out["n_queries"] = n
    if per_query:
        out["per_query"] = values
    return out


# --------------------------------------------------------------------------------------------
# dense search
# --------------------------------------------------------------------------------------------
def exact_search(docs: np.ndarray, queries: np.ndarray, k: int, *, block: int = 1024):
    """Exact inner-product top-``k`` with numpy (the oracle): ``(scores, indices)``, best first,
    ties by lower index."""
    docs = np.ascontiguousarray(docs, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(int(k), docs.shape[0])
    D = np.empty((len(queries), k), dtype=np.float32)
    I = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        sims = queries[s:s + block] @ docs.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sims, part, 1)
        order = np.lexsort((part, -ps), axis=1)
        I[s:s + block] = np.take_along_axis(part, order, 1)
        D[s:s + block] = np.take_along_axis(ps, order, 1)
    return D, I


def resolve_factory(index_type: str, dim: int, n: int) -> str:
    """An index name (flat, hnsw, ivf-flat, ... as ``embedkit index build`` knows them) or a FAISS
    factory string -> a factory string without the id map."""
    from ..stores.faiss_backend import factory_for

    f = factory_for(index_type, dim, n)
    return f.removeprefix("IDMap2,")


def build_faiss(index_type: str, vectors: np.ndarray, *, metric: str = "ip"):
    """A FAISS index over ``vectors`` (rows = corpus positions), trained on them if it needs it,
    with embedkit's default search parameters (HNSW efSearch, IVF nprobe)."""
    import faiss

    from ..stores.faiss_backend import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, IVF_NPROBE

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    factory = resolve_factory(index_type, x.shape[1], x.shape[0])
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    try:
        index = faiss.index_factory(x.shape[1], factory, mt)
    except RuntimeError as e:
        raise InputError(f"index {index_type!r} (factory {factory!r}) does not build for dimension "
                         f"{x.shape[1]}: {str(e).strip().splitlines()[-1][:200]}") from None
    ps = faiss.ParameterSpace()
    if hasattr(index, "hnsw"):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        index.train(x)
    index.add(x)
    if hasattr(index, "hnsw"):
        ps.set_index_parameter(index, "efSearch", HNSW_EF_SEARCH)
    if faiss.try_extract_index_ivf(index) is not None:
        ps.set_index_parameter(index, "nprobe", IVF_NPROBE)
    return index, factory


def index_bytes_per_vector(index) -> float:
    """Serialised size of the index divided by its vector count (codes plus graph / lists / overhead)."""
    import faiss

    return float(faiss.serialize_index(index).size) / max(1, index.ntotal)


def query_latency_p50(search_one, queries: np.ndarray, *, n: int = 200) -> float:
    """Median seconds of ``search_one(query_row)`` over the first ``n`` queries, one at a time."""
    t = []
    for q in queries[:n]:
        t0 = time.perf_counter()
        search_one(q)
        t.append(time.perf_counter() - t0)
    return float(np.median(t)) if t else float("nan")
