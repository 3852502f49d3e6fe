"""The retrieval grid behind ``embedkit eval --retrieval``: reducer x index type x mode on the
pairs -> retrieval protocol, each row with MRR@10, Recall@1/10, nDCG@10, bytes per vector, query p50
latency and the dense index's recall@10 against exact numpy search.

Modes: ``dense``; ``lexical`` (BM25, independent of reducer and index); ``rrf`` (reciprocal-rank
fusion, k=60); ``hybrid`` (weighted sum of min-max-normalised scores, the dense weight tuned by MRR@10
on the tuning split, default ``valid``, with the same reducer over exact search); ``weighted:W``
(a fixed dense weight W).  The reducer is fitted on the split's corpus vectors, as ``embedkit index
build`` fits it on the documents it indexes.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import fusion
from ..encoder import l2_normalize
from ..errors import InputError
from ..reducers import make_reducer
from .cache import EncodingCache, encoder_description
from .data import (
    check_data_dir,
    check_splits,
    load_task,
    resolve_tasks,
    task_max_length,
)
from .retrieval import (
    RetrievalSet,
    build_faiss,
    exact_search,
    index_bytes_per_vector,
    ir_metrics,
    retrieval_set,
)

log = logging.getLogger(__name__)

MODES = ("dense", "lexical", "rrf", "hybrid")
DEPTH = 100  # candidates taken from each side before fusion
METRIC_KEYS = ("mrr@10", "recall@1", "recall@10", "ndcg@10")


def check_modes(modes) -> list[str]:
    out = []
    for m in modes:
        m = str(m).strip()
        if m.startswith("weighted:"):
            try:
                fusion.check_weight(float(m.split(":", 1)[1]))
            except ValueError:
                raise InputError(f"mode {m!r}: the weight after 'weighted:' must be a number in [0, 1]") from None
        elif m not in MODES:
            raise InputError(f"mode {m!r} is not one of {', '.join(MODES)} or weighted:W (W in [0, 1])")
        if m not in out:
            out.append(m)
    if not out:
        raise InputError(f"no modes given; use some of {', '.join(MODES)}")
    return out


def _rows_of(texts: list[str], wanted: list[str]) -> np.ndarray:
    pos = {t: i for i, t in enumerate(texts)}
    return np.fromiter((pos[t] for t in wanted), dtype=np.int64, count=len(wanted))


def _hits(D: np.ndarray, I: np.ndarray) -> list[list[tuple[float, int]]]:
    return [[(float(d), int(i)) for d, i in zip(dr, ir) if i >= 0] for dr, ir in zip(D, I)]


def _ids(hits) -> list[list[int]]:
    return [[doc for _, doc in h] for h in hits]


def _metrics(rankings, rs: RetrievalSet) -> dict:
    m = ir_metrics(rankings, rs.relevant)
    return {k: m[k] for k in METRIC_KEYS}


class _Split:
    """One split's retrieval set with raw corpus / query vectors and its BM25 results."""

    def __init__(self, rs: RetrievalSet, texts: list[str], vectors: np.ndarray, depth: int, need_lex: bool):
        from ..lexical import BM25Index

        self.rs = rs
        self.doc_raw = vectors[_rows_of(texts, rs.corpus)]
        self.q_raw = vectors[_rows_of(texts, rs.queries)]
        self.bm = self.lex_hits = None
        self.lex_build_s = 0.0
        if need_lex:
            t0 = time.perf_counter()
            self.bm = BM25Index().fit(np.arange(len(rs.corpus)), rs.corpus)
            self.lex_build_s = time.perf_counter() - t0
            self.lex_hits = self.bm.search(rs.queries, k=depth)

    def reduce(self, spec: str):
        red = make_reducer(spec)
        if red.kind != "none":
            red.fit(self.doc_raw)
            return red, l2_normalize(red.transform(self.doc_raw)), l2_normalize(red.transform(self.q_raw))
        return red, l2_normalize(self.doc_raw), l2_normalize(self.q_raw)


def run_retrieval_grid(data_dir, *, tasks=None, splits=("test",), model=None, reducers=("none",),
                       index_types=("flat",), modes=MODES, tune_split: str | None = "valid",
                       limit: int | None = None, max_queries: int | None = None, depth: int = DEPTH,
                       rrf_k: int = fusion.DEFAULT_RRF_K, max_length: int | None = None,
                       batch_size: int = 32, cache_dir=None, device: str | None = None,
                       progress: bool | None = None, encoder_factory=None, latency_queries: int = 200) -> dict:
    """Run the grid; returns a JSON-ready dict with ``rows`` (one per task x split x reducer x index x
    mode; lexical rows once per task x split) and ``tuning`` (the hybrid weight per task x reducer)."""
    from .evaluator import _default_encoder_factory, _versions, expand_reducers

    t_start = time.perf_counter()
    modes = check_modes(modes)
    reducer_specs = expand_reducers(reducers)
    index_types = [str(t).strip() for t in index_types if str(t).strip()]
    if not index_types and any(m != "lexical" for m in modes):
        raise InputError("no index types given; use e.g. flat,hnsw,ivf-flat or a FAISS factory string")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10:
        raise InputError(f"depth must be an integer >= 10 (metrics are @10), got {depth!r}")
    root = check_data_dir(data_dir)
    task_names = resolve_tasks(root, tasks)
    splits = check_splits(splits or ["test"])
    need_lex = any(m != "dense" for m in modes)
    need_tune = "hybrid" in modes and tune_split is not None
    if need_tune:
        check_splits([tune_split])
    factory = encoder_factory or _default_encoder_factory
    cache = EncodingCache(cache_dir)
    rows: list[dict] = []
    tuning: list[dict] = []
    sets: list[dict] = []
    encoders: dict = {}
    for task in task_names:
        wanted = list(dict.fromkeys(splits + ([tune_split] if need_tune else [])))
        pairsets = load_task(root, task, wanted, limit=limit)
        if not any(s in pairsets for s in splits):
            log.warning("%s: none of the splits %s exist; skipping the task", task, ",".join(splits))
            continue
        mlen = max_length or task_max_length(task)
        if mlen not in encoders:
            encoders[mlen] = factory(model, pooling="model", max_length=mlen, batch_size=batch_size,
                                     device=device)
        enc = encoders[mlen]
        desc = encoder_description(enc)
        sets_here = {s: retrieval_set(ps, max_queries=max_queries) for s, ps in pairsets.items()}
        # only what is retrieved or queried is encoded (one cache entry per split)
        texts = {s: list(dict.fromkeys(rs.corpus + rs.queries)) for s, rs in sets_here.items()}
        vecs = dict(zip(texts, cache.get_many(enc, list(texts.values()), description=desc,
                                              batch_size=batch_size, show_progress_bar=progress)))
        data = {s: _Split(rs, texts[s], vecs[s], depth, need_lex) for s, rs in sets_here.items()}
        weights = {}
        if need_tune:
            tune = data.get(tune_split)
            for spec in reducer_specs:
                if tune is None:
                    log.warning("%s has no %s split to tune the hybrid weight on; hybrid rows use 0.5",
                                task, tune_split)
                    weights[spec] = {"weight": 0.5, "tuned_on": None}
                    continue
                _, d, q = tune.reduce(spec)
                dense = _hits(*exact_search(d, q, depth))
                t = fusion.tune_weight(dense, tune.lex_hits, tune.rs.relevant)
                weights[spec] = {"weight": t["weight"], "tuned_on": tune_split}
                tuning.append({"task": task, "reducer": spec, "tuned_on": tune_split,
                               "n_queries": len(tune.rs.queries), **t})
        for s in splits:
            if s not in data:
                continue
            sp = data[s]
            sets.append(sp.rs.summary())
            rows.extend(_score_split(sp, reducer_specs, index_types, modes, weights, depth, rrf_k,
                                     latency_queries))
    if not rows:
        raise InputError(f"nothing to evaluate: no scorable splits {', '.join(splits)} for tasks "
                         f"{', '.join(task_names)} in {str(root)!r}")
    return {"format": "embedkit-retrieval-results", "version": 1,
            "protocol": "pairs->retrieval: corpus = unique sentence2, queries = unique sentence1 with a "
                        "positive pair (label 1, or >= 4 on 0-5 scales), relevant = their positive sentence2",
            "settings": {"data_dir": str(root), "tasks": task_names, "splits": splits, "model": model,
                         "reducers": reducer_specs, "index_types": index_types, "modes": modes,
                         "tune_split": tune_split if need_tune else None, "limit": limit,
                         "max_queries": max_queries, "depth": depth, "rrf_k": rrf_k,
                         "max_length": max_length, "similarity": "cosine",
                         "reducer_fit": "the split's corpus vectors"},
            "encoder": desc if encoders else None,
            "sets": sets, "rows": rows, "tuning": tuning, "cache": cache.stats(),
            "timings": {"total_s": round(time.perf_counter() - t_start, 3),
                        "encode_s": round(cache.encode_s, 3)},
            "versions": _versions()}


def _score_split(sp: _Split, reducer_specs, index_types, modes, weights, depth, rrf_k, n_lat) -> list[dict]:
    rs = sp.rs
    base = {"task": rs.task, "split": rs.split, "n_queries": len(rs.queries), "n_corpus": len(rs.corpus)}
    out = []
    if "lexical" in modes:
        lat = _latency_pairs(lambda q, i: sp.bm.search([rs.queries[i]], k=10), rs.queries, n_lat)
        out.append({**base, "reducer": None, "dim": None, "index": "bm25", "factory": None, "mode": "lexical",
                    "weight": None, **_metrics(_ids(sp.lex_hits), rs), "bytes_per_vector": None,
                    "recall_vs_exact@10": None, "p50_ms": round(lat * 1e3, 4),
                    "build_s": round(sp.lex_build_s, 3)})
    dense_modes = [m for m in modes if m != "lexical"]
    for spec in reducer_specs:
        if not dense_modes:
            break
        try:
            _, docs, qs = sp.reduce(spec)
        except InputError as e:
            log.warning("%s-%s %s: %s", rs.task, rs.split, spec, e)
            out.append({**base, "reducer": spec, "mode": "dense", "error": str(e)})
            continue
        _, I_exact = exact_search(docs, qs, 10)
        for itype in index_types:
            cell = {**base, "reducer": spec, "dim": int(docs.shape[1])}
            try:
                t0 = time.perf_counter()
                index, factory = build_faiss(itype, docs)
                build_s = time.perf_counter() - t0
            except InputError as e:
                log.warning("%s-%s %s %s: %s", rs.task, rs.split, spec, itype, e)
                out.append({**cell, "index": itype, "mode": "dense", "error": str(e)})
                continue
            D, I = index.search(qs, depth)
            dense = _hits(D, I)
            from faiss.contrib.evaluation import knn_intersection_measure

            ann = float(knn_intersection_measure(I[:, :10], I_exact))
            cell.update({"index": itype, "factory": factory, "bytes_per_vector": round(index_bytes_per_vector(index), 2),
                         "recall_vs_exact@10": round(ann, 5), "build_s": round(build_s, 3)})

            def dense_one(q, index=index):
                return index.search(q[None, :], depth)
            for mode in dense_modes:
                w = None
                if mode == "dense":
                    ranked = _ids(dense)

                    def one(q, i, dense_one=dense_one):
                        return dense_one(q)
                elif mode == "rrf":
                    ranked = _ids(fusion.fuse(dense, sp.lex_hits, method="rrf", rrf_k=rrf_k, top_k=10))

                    def one(q, i, dense_one=dense_one):
                        d = _hits(*dense_one(q))
                        return fusion.rrf([d[0], sp.bm.search([rs.queries[i]], k=depth)[0]], k=rrf_k, top_k=10)
                else:
                    w = weights[spec]["weight"] if mode == "hybrid" else float(mode.split(":", 1)[1])
                    ranked = _ids(fusion.fuse(dense, sp.lex_hits, weight=w, top_k=10))

                    def one(q, i, w=w, dense_one=dense_one):
                        d = _hits(*dense_one(q))
                        return fusion.weighted(d[0], sp.bm.search([rs.queries[i]], k=depth)[0], w, top_k=10)
                lat = _latency_pairs(one, qs, n_lat)
                out.append({**cell, "mode": mode, "weight": w,
                            "tuned_on": weights.get(spec, {}).get("tuned_on") if mode == "hybrid" else None,
                            **_metrics(ranked, rs), "p50_ms": round(lat * 1e3, 4)})
    return out


def _latency_pairs(one, qs, n: int) -> float:
    """Median seconds of ``one(qs[i], i)`` over the first ``n`` queries, one at a time."""
    t = []
    for i in range(min(n, len(qs))):
        t0 = time.perf_counter()
        one(qs[i], i)
        t.append(time.perf_counter() - t0)
    return float(np.median(t)) if t else float("nan")
