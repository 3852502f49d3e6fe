#!/usr/bin/env python
"""Nearest-neighbour search at a million vectors: exact numpy vs FAISS flat, HNSW, IVF-Flat, IVF-PQ.

Data: synthetic, seeded, shaped like sentence embeddings: a Zipf-weighted mixture of Gaussian
clusters in a random low-rank subspace with a decaying spectrum, a shared mean direction (the
anisotropy of BERT-style vectors) and isotropic noise, L2-normalised. d=512 is generated directly;
d=256 is that same data after a PCA reduction to 256 dimensions fitted on a sample (as
`--reduce pca:256` would), re-normalised. Queries are held-out draws from the same distribution.

For every configuration: build time, bytes per vector, single-query latency (p50/p99, one query
per call), batched latency and QPS (all queries in one call), and recall@k against exact search
(numpy: batched matmul + argpartition). Plain FAISS API, no embedkit index code.

    flock /tmp/embedkit-heavy.lock python scripts/bench_search.py                 # 1M, d=512 and 256
    flock /tmp/embedkit-heavy.lock python scripts/bench_search.py --n 100000 --dims 256

Writes scripts/benchmarks/search.json (rows for the dims run here replace earlier rows for those
dims; other dims already in the file are kept, so d=512 and d=256 can run as separate processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# OpenMP threads sleep instead of spinning while idle: on a shared 2-core machine spinning workers
# slow FAISS training and batched search down badly. Must be set before faiss/numpy start threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

TARGET_RECALL = 0.95
TARGET_SPEEDUP = 20.0
CHUNK = 100_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------
class Generator:
    """Seeded generator of embedding-like unit vectors (see the module docstring)."""

    def __init__(self, d: int, seed: int, n_clusters: int = 2000):
        rng = np.random.default_rng(seed)
        self.d = d
        self.r = max(8, d // 4)
        self.basis = np.linalg.qr(rng.standard_normal((d, self.r)))[0].astype(np.float32)  # d x r
        self.spectrum = (1.0 / np.sqrt(1.0 + np.arange(self.r))).astype(np.float32)
        self.centers = rng.standard_normal((n_clusters, self.r)).astype(np.float32)
        w = 1.0 / (1.0 + np.arange(n_clusters)) ** 0.8
        self.weights = w / w.sum()
        mean = rng.standard_normal(d).astype(np.float32)
        self.mean = mean / np.linalg.norm(mean)
        self.mean_scale = 2.0      # shared direction: raw cosines sit well above 0, as with BERT
        self.spread = 0.6          # within-cluster spread, relative to the centre scale
        self.noise = 0.15 / math.sqrt(d / self.r)  # isotropic noise outside the subspace

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.d), dtype=np.float32)
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            z = rng.choice(len(self.weights), size=m, p=self.weights)
            lat = self.centers[z] + self.spread * rng.standard_normal((m, self.r), dtype=np.float32)
            x = (lat * self.spectrum) @ self.basis.T
            x += self.noise * rng.standard_normal((m, self.d), dtype=np.float32)
            x += self.mean_scale * self.mean * float(np.sqrt((self.spectrum ** 2).sum() / self.r))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s:s + m] = x
        return out


def pca_reduce(X: np.ndarray, Q: np.ndarray, k: int, seed: int, fit_n: int = 100_000):
    """Fit PCA on a sample of X, project X and Q to k dims and re-normalise (chunked, float32)."""
    from embedkit.reducers import PCAReducer

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=min(fit_n, len(X)), replace=False)
    red = PCAReducer(k).fit(X[np.sort(idx)])
    mean, comp = red.mean_.astype(np.float32), red.components_.astype(np.float32)

    def tr(A):
        out = np.empty((len(A), k), dtype=np.float32)
        for s in range(0, len(A), CHUNK):
            y = (A[s:s + CHUNK] - mean) @ comp
            out[s:s + CHUNK] = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return out

    return tr(X), tr(Q)


# -- exact search ----------------------------------------------------------------------------------
def exact_topk(X: np.ndarray, Q: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Exact inner-product top-k ids for every query (batched matmul + argpartition, merged)."""
    best_s = np.full((len(Q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(Q), k), dtype=np.int64)
    for s in range(0, len(X), chunk):
        S = Q @ X[s:s + chunk].T
        kk = min(k, S.shape[1])
        part = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        ps = np.take_along_axis(S, part, axis=1)
        cat_s = np.concatenate([best_s, ps], axis=1)
        cat_i = np.concatenate([best_i, part + s], axis=1)
        sel = np.argsort(-cat_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cat_s, sel, axis=1)
        best_i = np.take_along_axis(cat_i, sel, axis=1)
    return best_i


def exact_single(X: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = X @ q
    idx = np.argpartition(-s, k - 1)[:k]
    return idx[np.argsort(-s[idx])]


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Recall@k against the exact top-k: ``faiss.contrib.evaluation.knn_intersection_measure``."""
    from faiss.contrib.evaluation import knn_intersection_measure

    return float(knn_intersection_measure(np.asarray(found)[:, :k], np.asarray(truth)[:, :k]))


# -- measuring one configuration ---------------------------------------------------------------------
def time_single(search_one, Q: np.ndarray, n_single: int) -> tuple[float, float, np.ndarray]:
    lat, ids = [], []
    search_one(Q[0])  # warm-up
    for q in Q[:n_single]:
        t0 = time.perf_counter()
        ids.append(search_one(q))
        lat.append((time.perf_counter() - t0) * 1000)
    return benchlib.percentile(lat, 50), benchlib.percentile(lat, 99), np.asarray(ids)


def faiss_row(name, family, params, index, Q, truth, k, n_single, build_s, bytes_per_vector):
    def one(q):
        return index.search(q[None, :], k)[1][0]

    p50, p99, _ = time_single(one, Q, n_single)
    t0 = time.perf_counter()
    _, I = index.search(Q, k)
    batch_s = time.perf_counter() - t0
    row = {"name": name, "family": family, "params": params, "build_s": round(build_s, 2),
           "bytes_per_vector": round(bytes_per_vector, 1), "single_p50_ms": round(p50, 4),
           "single_p99_ms": round(p99, 4), "batch_queries": len(Q), "batch_ms": round(batch_s * 1000, 2),
           "qps": round(len(Q) / batch_s, 1), f"recall_at_{k}": round(recall_at_k(I, truth, k), 4)}
    log(f"{name:32s} p50 {p50:9.3f} ms  qps {row['qps']:9.1f}  recall {row[f'recall_at_{k}']:.4f}")
    return row


def ivf_bytes(index, n: int) -> float:
    # codes + 8-byte ids in the inverted lists, plus the coarse centroids amortised over n
    return index.code_size + 8 + index.nlist * index.d * 4 / max(n, 1)


def hnsw_bytes(index, n: int) -> float:
    h = index.hnsw
    graph = h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
    return index.storage.sa_code_size() + graph / max(n, 1)


def nlist_rule(n: int) -> int:
    """About 4*sqrt(n) lists, with at least 39 training points per list: the index's own rule."""
    from embedkit.stores.faiss_backend import nlist_for

    return nlist_for(n, n)


# -- one dimension ---------------------------------------------------------------------------------
def bench_dim(X, Q, args, faiss) -> dict:
    n, d = X.shape
    k = args.k
    rows = []
    log(f"d={d}: exact numpy top-{k} for {len(Q)} queries")
    t0 = time.perf_counter()
    truth = exact_topk(X, Q, k)
    exact_batch_s = time.perf_counter() - t0
    p50, p99, ids = time_single(lambda q: exact_single(X, q, k), Q, args.single_exact)
    rows.append({"name": "exact numpy", "family": "exact", "params": {}, "build_s": 0.0,
                 "bytes_per_vector": d * 4.0, "single_p50_ms": round(p50, 4), "single_p99_ms": round(p99, 4),
                 "batch_queries": len(Q), "batch_ms": round(exact_batch_s * 1000, 2),
                 "qps": round(len(Q) / exact_batch_s, 1),
                 f"recall_at_{k}": round(recall_at_k(ids, truth[:len(ids)], k), 4)})
    log(f"{'exact numpy':32s} p50 {p50:9.3f} ms  qps {rows[-1]['qps']:9.1f}")

    fams = set(args.families)
    if "flat" in fams:
        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(d)
        index.add(X)
        rows.append(faiss_row("faiss flat", "flat", {}, index, Q, truth, k, args.single_exact,
                              time.perf_counter() - t0, d * 4.0))
        del index

    if "ivf-flat" in fams or "ivf-pq" in fams:
        nlist = args.nlist or nlist_rule(n)
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = args.kmeans_iter
        rng = np.random.default_rng(args.seed + 7)
        n_train = min(n, max(39 * nlist, args.train_min))
        train = X[np.sort(rng.choice(n, size=n_train, replace=False))]
        log(f"IVF: training {nlist} lists on {n_train} vectors ({args.kmeans_iter} k-means iterations)")
        t0 = time.perf_counter()
        ivf.train(train)
        train_s = time.perf_counter() - t0
        centroids = quantizer.reconstruct_n(0, nlist)
        if "ivf-flat" in fams:
            t0 = time.perf_counter()
            ivf.add(X)
            build = train_s + time.perf_counter() - t0
            for nprobe in args.nprobe:
                ivf.nprobe = nprobe
                rows.append(faiss_row(f"IVF{nlist},Flat nprobe={nprobe}", "ivf-flat",
                                      {"nlist": nlist, "nprobe": nprobe, "train_vectors": n_train},
                                      ivf, Q, truth, k, args.single, build, ivf_bytes(ivf, n)))
        del ivf, quantizer
        if "ivf-pq" in fams:
            m = args.pq_m or d // 4
            q2 = faiss.IndexFlatIP(d)
            q2.add(centroids)  # reuse the coarse k-means; only the PQ codebooks are trained here
            pq = faiss.IndexIVFPQ(q2, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            pq.pq.cp.niter = args.kmeans_iter
            t0 = time.perf_counter()
            pq.train(train)
            pq.add(X)
            build = train_s + time.perf_counter() - t0
            for nprobe in args.nprobe:
                pq.nprobe = nprobe
                rows.append(faiss_row(f"IVF{nlist},PQ{m}x8 nprobe={nprobe}", "ivf-pq",
                                      {"nlist": nlist, "nprobe": nprobe, "pq_m": m, "pq_bits": 8,
                                       "train_vectors": n_train},
                                      pq, Q, truth, k, args.single, build, ivf_bytes(pq, n)))
            del pq, q2
        del train

    if "hnsw" in fams:
        index = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        log(f"HNSW{args.hnsw_m}: building over {n} vectors (efConstruction {args.ef_construction})")
        t0 = time.perf_counter()
        for s in range(0, n, 200_000):
            index.add(X[s:s + 200_000])
            log(f"  HNSW added {min(n, s + 200_000)}/{n} ({time.perf_counter() - t0:.0f}s)")
        build = time.perf_counter() - t0
        for ef in args.ef_search:
            index.hnsw.efSearch = ef
            rows.append(faiss_row(f"HNSW{args.hnsw_m} efSearch={ef}", "hnsw",
                                  {"M": args.hnsw_m, "efConstruction": args.ef_construction, "efSearch": ef},
                                  index, Q, truth, k, args.single, build, hnsw_bytes(index, n)))
        del index

    base = next((r for r in rows if r["family"] == "flat"), rows[0])
    for r in rows:
        r["speedup_single_vs_flat"] = round(base["single_p50_ms"] / r["single_p50_ms"], 2)
        r["speedup_single_vs_exact_numpy"] = round(rows[0]["single_p50_ms"] / r["single_p50_ms"], 2)
    rk = f"recall_at_{k}"
    ok = [r for r in rows if r["family"] not in ("exact", "flat") and r[rk] >= TARGET_RECALL
          and r["speedup_single_vs_flat"] >= TARGET_SPEEDUP]
    chosen = min(ok, key=lambda r: r["single_p50_ms"]) if ok else None
    return {"n": n, "d": d, "rows": rows, "baseline": base["name"],
            "target": {"recall": TARGET_RECALL, "speedup_single_vs_flat": TARGET_SPEEDUP,
                       "met": chosen is not None, "fastest_meeting": chosen and chosen["name"]},
            "smallest_meeting_per_family": _smallest_per_family(rows, rk),
            "pareto": _pareto(rows, rk)}


def _pareto(rows, rk) -> list[str]:
    """The recall / single-query latency operating points no other setting beats on both
    (``faiss.contrib.evaluation.OperatingPoints``)."""
    from faiss.contrib.evaluation import OperatingPoints

    ops = OperatingPoints()
    for r in rows:
        ops.add_operating_point(r["name"], r[rk], r["single_p50_ms"])
    return [key for key, _, _ in sorted(ops.operating_points, key=lambda p: p[2])]


def _smallest_per_family(rows, rk) -> dict:
    """Per approximate family: the cheapest search setting reaching the recall target, and its speedup."""
    out = {}
    for fam, knob in (("hnsw", "efSearch"), ("ivf-flat", "nprobe"), ("ivf-pq", "nprobe")):
        cand = sorted((r for r in rows if r["family"] == fam and r[rk] >= TARGET_RECALL),
                      key=lambda r: r["params"][knob])
        if cand:
            r = cand[0]
            out[fam] = {knob: r["params"][knob], "recall": r[rk], "speedup_single_vs_flat": r["speedup_single_vs_flat"],
                        "meets_speed_target": r["speedup_single_vs_flat"] >= TARGET_SPEEDUP}
    return out


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dims", default="512,256", help="512 and/or 256 (256 = PCA of the 512 data)")
    ap.add_argument("--nq", type=int, default=1000, help="queries for recall and the batched timing")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--single", type=int, default=300, help="queries timed one by one (ANN indexes)")
    ap.add_argument("--single-exact", type=int, default=30, help="queries timed one by one (exact/flat)")
    ap.add_argument("--families", default="flat,ivf-flat,ivf-pq,hnsw")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--ef-search", default="16,32,64,128,256")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: about 4*sqrt(n))")
    ap.add_argument("--nprobe", default="4,8,16,32,64,128")
    ap.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (default d/4, 8 bits each)")
    ap.add_argument("--kmeans-iter", type=int, default=10)
    ap.add_argument("--train-min", type=int, default=50_000)
    ap.add_argument("--threads", type=int, default=None, help="FAISS/BLAS threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="result file (default scripts/benchmarks/search.json)")
    ap.add_argument("--recommend-only", action="store_true",
                    help="recompute recommended_defaults in the existing result file and print it (no runs)")
    args = ap.parse_args(argv)
    if args.recommend_only:
        path = Path(args.out) if args.out else benchlib.RESULTS_DIR / "search.json"
        result = json.loads(path.read_text(encoding="utf-8"))
        result["recommended_defaults"] = recommend(result["dims"], result["config"]["k"])
        benchlib.write_result("search", result, path)
        print_table(result, result["config"]["k"])
        return 0
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    args.ef_search = [int(x) for x in args.ef_search.split(",")]
    args.nprobe = [int(x) for x in args.nprobe.split(",")]
    dims = [int(x) for x in args.dims.split(",")]
    if any(x not in (512, 256) for x in dims):
        ap.error("--dims takes 512 and/or 256")

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    threads = faiss.omp_get_max_threads()
    out_path = Path(args.out) if args.out else benchlib.RESULTS_DIR / "search.json"
    previous = {}
    if out_path.is_file():
        try:
            prev = json.loads(out_path.read_text(encoding="utf-8"))
            if prev.get("config", {}).get("n") == args.n:
                previous = prev.get("dims", {})
        except (OSError, ValueError):
            previous = {}

    gen = Generator(512, args.seed)
    log(f"generating {args.n} x 512 vectors + {args.nq} queries")
    t0 = time.perf_counter()
    X = gen.sample(args.n, args.seed + 1)
    Q = gen.sample(args.nq, args.seed + 2)
    log(f"generated in {time.perf_counter() - t0:.1f}s")
    results = dict(previous)
    command = "python scripts/bench_search.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if 512 in dims:
        results["512"] = bench_dim(X, Q, args, faiss)
        results["512"]["command"] = command
    if 256 in dims:
        log("PCA-reducing to 256 dims")
        X, Q = pca_reduce(X, Q, 256, args.seed)
        results["256"] = bench_dim(X, Q, args, faiss)
        results["256"]["command"] = command
    del X

    result = {
        "benchmark": "search",
        "date": benchlib.now_utc(),
        "machine": benchlib.machine_info(faiss=faiss, numpy=np),
        "config": {"n": args.n, "nq": args.nq, "k": args.k, "threads": threads,
                   "single_queries": args.single, "single_queries_exact": args.single_exact,
                   "data": "synthetic: Zipf mixture of 2000 Gaussian clusters in a rank-128 subspace, "
                           "shared mean direction, isotropic noise, unit norm; d=256 is its PCA reduction "
                           f"(seed {args.seed})",
                   "metric": "inner product (cosine on unit vectors)",
                   "command": "python scripts/bench_search.py " + " ".join(argv if argv is not None else sys.argv[1:])},
        "dims": {k: results[k] for k in sorted(results, key=int, reverse=True)},
    }
    result["recommended_defaults"] = recommend(result["dims"], args.k)
    benchlib.write_result("search", result, out_path)
    print_table(result, args.k)
    return 0


DEFAULT_MARGIN = 0.01  # defaults must clear the recall target by this much at every measured d


def recommend(dims: dict, k: int, margin: float = DEFAULT_MARGIN) -> dict:
    """Smallest efSearch / nprobe whose recall@k is >= target + margin at every measured dimension."""
    rk, need = f"recall_at_{k}", TARGET_RECALL + margin
    rec = {"rule": f"smallest setting with recall@{k} >= {need:.2f} (target {TARGET_RECALL} + margin "
                   f"{margin}) at every measured dimension"}
    for fam, knob in (("hnsw", "efSearch"), ("ivf-flat", "nprobe"), ("ivf-pq", "nprobe")):
        per_dim = []
        for dd in dims.values():
            rows = [r for r in dd["rows"] if r["family"] == fam]
            if not rows:
                continue
            ok = sorted(r["params"][knob] for r in rows if r[rk] >= need)
            per_dim.append(ok[0] if ok else None)
        if not per_dim:
            continue
        if all(v is not None for v in per_dim):
            rec[fam] = {knob: max(per_dim)}
            for dd in dims.values():
                row = next((r for r in dd["rows"] if r["family"] == fam and r["params"][knob] == max(per_dim)), None)
                if row:
                    rec[fam][f"d{dd['d']}"] = {"recall": row[rk], "single_p50_ms": row["single_p50_ms"],
                                               "speedup_single_vs_flat": row["speedup_single_vs_flat"]}
        else:
            rec[fam] = {knob: None, "note": f"recall@{k} >= {need:.2f} not reached at some dimension"}
    return rec


def print_table(result: dict, k: int) -> None:
    rk = f"recall_at_{k}"
    for d, dd in result["dims"].items():
        print(f"\nn={dd['n']} d={d}  (speedup = single-query p50 of {dd['baseline']} / this)")
        print(f"{'index':34s} {'build s':>8s} {'B/vec':>7s} {'p50 ms':>9s} {'batch ms':>9s} {'QPS':>9s} "
              f"{'recall':>7s} {'speedup':>8s}")
        for r in dd["rows"]:
            print(f"{r['name']:34s} {r['build_s']:8.1f} {r['bytes_per_vector']:7.0f} {r['single_p50_ms']:9.3f} "
                  f"{r['batch_ms']:9.1f} {r['qps']:9.0f} {r[rk]:7.4f} {r['speedup_single_vs_flat']:7.1f}x")
        print(f"target (recall@{k} >= {TARGET_RECALL}, >= {TARGET_SPEEDUP}x): "
              f"{'met by ' + dd['target']['fastest_meeting'] if dd['target']['met'] else 'NOT met'}")
    print(f"\nrecommended defaults: {result['recommended_defaults']}")


if __name__ == "__main__":
    sys.exit(main())
