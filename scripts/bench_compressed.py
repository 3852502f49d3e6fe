"""Benchmark: compressed indexes (int8, binary + exact rescoring, pca:256 + int8) against float flat.

Two parts, side by side in one run:

1. Retrieval quality: the pairs -> retrieval eval (``embedkit.evaluation.retrieval_grid``, the code
   behind ``embedkit eval --retrieval``) on the LCQMC, BQ, ATEC and STS-B test splits with m3e-small
   (max_length 64): MRR@10 of every compressed type against float flat, with code bytes per vector
   and bytes held in RAM per vector. Checks issue 12's targets per task.
2. Memory and latency at N synthetic vectors (default 1M, d=512, the embedding-like generator of
   bench_search.py) through ``EmbedIndex`` (build, load, search_vectors): each configuration is
   built in one subprocess and loaded and searched in another, so RSS (anonymous memory, and
   file-backed pages for the memory-mapped binary vectors) is its own. Recall@10 is against exact
   float search of the 512-d vectors.

    flock /tmp/embedkit-bench.lock nice python scripts/bench_compressed.py [--n 1000000] [--skip-synthetic]

Writes scripts/benchmarks/compressed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402
from benchlib import machine_info, now_utc, percentile, write_result  # noqa: E402

TASKS = ["LCQMC", "BQ", "ATEC", "STS-B"]
INDEXES = ["flat", "int8", "hnsw-int8", "binary", "binary-hnsw"]
REDUCERS = ["none", "pca:256"]
# reducer|index[|param=value] at N vectors
SYNTHETIC = ["none|flat", "none|int8", "none|binary", "none|binary|rescore=40", "pca:256|int8"]
DIM, CHUNK, GEN_SEED, QUERY_SEED = 512, 4096, 1, 10**9
TARGETS = {"int8": (0.99, 4), "binary": (0.96, 16), "pca:256|int8": (0.5, 8)}


# -- part 1: retrieval quality ---------------------------------------------------------------------
def retrieval(args) -> dict:
    from embedkit.evaluation.retrieval_grid import run_retrieval_grid

    res = run_retrieval_grid(args.data, tasks=args.tasks, splits=["test"], model=args.model, reducers=REDUCERS,
                             index_types=INDEXES, modes=["dense"], max_length=64, cache_dir=args.cache_dir,
                             progress=False, max_queries=args.max_queries)
    table: dict = {}
    for r in res["rows"]:
        if "error" in r:
            raise SystemExit(f"{r['task']} {r['reducer']} {r['index']}: {r['error']}")
        table.setdefault(r["task"], {"n_corpus": r["n_corpus"], "n_queries": r["n_queries"]})[
            f"{r['reducer']}|{r['index']}"] = {
            "mrr@10": round(100 * r["mrr@10"], 2), "recall@10": round(100 * r["recall@10"], 2),
            "code_bytes": r["code_bytes"], "ram_bytes": r["bytes_per_vector"], "p50_ms": r["p50_ms"],
            "recall_vs_exact@10": r["recall_vs_exact@10"]}
    return {"table": table, "checks": checks_for(table), "sets": res["sets"], "encoder": res["encoder"],
            "seconds": res["timings"]["total_s"]}


def checks_for(table: dict) -> list[dict]:
    """Issue 12's targets per task (binary-hnsw and hnsw-int8 are reported, not targets: their RAM is
    mostly HNSW graph links, 2·M·4 = 256 bytes per vector)."""
    checks = []
    for task, t in table.items():
        flat = t["none|flat"]
        for key, what in (("none|int8", "int8"), ("none|binary", "binary")):
            keep, smaller = TARGETS[what]
            c = t[key]
            ratio = c["mrr@10"] / flat["mrr@10"]
            bytes_ratio = (flat["code_bytes"] / c["code_bytes"]) if what == "int8" else (flat["ram_bytes"] / c["ram_bytes"])
            checks.append({"task": task, "what": f"{key.split('|')[1]} vs float flat",
                           "mrr_ratio": round(ratio, 4), "bytes_ratio": round(bytes_ratio, 2),
                           "bytes": "code" if what == "int8" else "ram",
                           "target": f"MRR@10 >= {keep:.0%} of flat, >= {smaller}x fewer "
                                     f"{'code' if what == 'int8' else 'RAM'} bytes per vector",
                           "met": ratio >= keep and bytes_ratio >= smaller})
        lost, smaller = TARGETS["pca:256|int8"]
        c = t["pca:256|int8"]
        delta = round(flat["mrr@10"] - c["mrr@10"], 2)
        bytes_ratio = flat["code_bytes"] / c["code_bytes"]
        checks.append({"task": task, "what": "pca:256+int8 vs float flat 512-d", "mrr_lost": delta,
                       "bytes_ratio": round(bytes_ratio, 2), "bytes": "code",
                       "target": f"<= {lost} points MRR@10 lost, >= {smaller}x fewer code bytes per vector",
                       "met": delta <= lost and bytes_ratio >= smaller})
    return checks


# -- part 2: N synthetic vectors through EmbedIndex -------------------------------------------------
def _generator():
    from bench_search import Generator

    return Generator(DIM, GEN_SEED)


class SyntheticEncoder:
    """Document ``s-<i>`` gets row i of the seeded generator (generated per aligned chunk of CHUNK)."""

    def __init__(self):
        self.gen = _generator()

    def describe(self):
        return {"model": "synthetic", "pooling": "model", "max_length": 64, "backend": "torch", "dim": DIM}

    def encode(self, texts, normalize=None, batch_size=None, show_progress_bar=None):
        first = int(texts[0].split("-")[1])
        assert first % CHUNK == 0 and len(texts) <= CHUNK, "synthetic vectors come in aligned chunks"
        return self.gen.sample(CHUNK, seed=first)[:len(texts)]


def _status() -> dict:
    out = {}
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024  # MiB
    return out


def child_build(args) -> None:
    import resource

    from embedkit.corpus import Doc
    from embedkit.index import EmbedIndex

    reduce, kind, *extra = args.config.split("|")  # e.g. none|binary|rescore=40
    params = {k: int(v) for k, v in (e.split("=") for e in extra)}
    t0 = time.perf_counter()
    idx = EmbedIndex.build(args.dir, (Doc(f"d-{i}", f"s-{i}") for i in range(args.n)), encoder=SyntheticEncoder(),
                           reduce=reduce, index=kind, index_params=params or None, chunk_size=CHUNK,
                           show_progress_bar=False, expected_size=args.n)
    info = idx.info()
    print(json.dumps({"build_s": round(time.perf_counter() - t0, 1),
                      "build_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "bytes_per_vector": info["index"]["bytes_per_vector"], "dir_bytes": info["size_bytes"]}))


def child_search(args) -> None:
    import faiss  # noqa: F401  (libraries mapped before the first RSS reading: only the index counts)

    from embedkit.index import EmbedIndex
    from embedkit.stores import docs_sqlite, faiss_store  # noqa: F401

    q = _generator().sample(args.queries, seed=QUERY_SEED)
    truth = np.load(args.truth)
    s0 = _status()
    idx = EmbedIndex.load(args.dir, encoder=SyntheticEncoder())
    s1 = _status()
    qv = idx.query_path.project(q)
    for i in range(min(10, len(qv))):  # warm-up (first touches of the mapped file, caches)
        idx.search_vectors(qv[i:i + 1], 10)
    lat, got = [], []
    for i in range(len(qv)):
        t0 = time.perf_counter()
        row = idx.search_vectors(qv[i:i + 1], 10)[0]
        lat.append(time.perf_counter() - t0)
        got.append([int(h.id[2:]) for h in row])
    s2 = _status()
    recall = float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)]))
    print(json.dumps({"rss_anon_load_mib": round(s1["RssAnon"] - s0["RssAnon"], 1),
                      "rss_anon_after_search_mib": round(s2["RssAnon"] - s0["RssAnon"], 1),
                      "rss_file_after_search_mib": round(s2["RssFile"] - s0["RssFile"], 1),
                      "p50_ms": round(1e3 * percentile(lat, 50), 3), "p99_ms": round(1e3 * percentile(lat, 99), 3),
                      "recall@10": round(recall, 4)}))


def exact_truth(n: int, nq: int) -> np.ndarray:
    gen = _generator()
    q = gen.sample(nq, seed=QUERY_SEED)
    best_s = np.full((nq, 10), -np.inf, np.float32)
    best_i = np.zeros((nq, 10), np.int64)
    for s in range(0, n, CHUNK):
        x = gen.sample(CHUNK, seed=s)[:min(CHUNK, n - s)]
        sc = q @ x.T
        cat_s = np.concatenate([best_s, sc], axis=1)
        cat_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + x.shape[0]), sc.shape)], axis=1)
        top = np.argsort(-cat_s, axis=1, kind="stable")[:, :10]
        best_s, best_i = np.take_along_axis(cat_s, top, 1), np.take_along_axis(cat_i, top, 1)
    return best_i


def synthetic(args) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compressed-", dir=args.tmp) as tmp:
        truth = Path(tmp) / "truth.npy"
        t0 = time.perf_counter()
        np.save(truth, exact_truth(args.n, args.queries))
        print(f"exact truth for {args.queries} queries over {args.n}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        for config in args.configs:
            d = Path(tmp) / config.replace("|", "_").replace(":", "").replace("=", "")
            row = {"config": config, "n": args.n}
            for job in (["--child", "build", "--config", config], ["--child", "search", "--truth", str(truth)]):
                cmd = [sys.executable, __file__, *job, "--dir", str(d), "--n", str(args.n), "--queries",
                       str(args.queries)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{config} {job[1]} failed: {out.stderr[-3000:]}")
                row.update(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
            import shutil

            shutil.rmtree(d)
    return {"n": args.n, "dim": DIM, "queries": args.queries, "rows": rows}


def merge_rows(old: dict | None, new: dict) -> dict:
    """Rows of configurations not run this time are kept (same N and query count only)."""
    if old and (old.get("n"), old.get("queries")) == (new["n"], new["queries"]):
        ran = {r["config"] for r in new["rows"]}
        new = dict(new, rows=[r for r in old["rows"] if r["config"] not in ran] + new["rows"])
        order = {c: i for i, c in enumerate(SYNTHETIC)}
        new["rows"].sort(key=lambda r: (order.get(r["config"], len(order)), r["config"]))
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sts-zh"))
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "m3e-small"))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--cache-dir", default=str(ROOT / ".eval-cache"))
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors (part 2)")
    ap.add_argument("--queries", type=int, default=100, help="synthetic queries (part 2)")
    ap.add_argument("--configs", default=",".join(SYNTHETIC), help="reducer|index pairs for part 2")
    ap.add_argument("--skip-retrieval", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--tmp", default=None, help="where part 2 builds its indexes [default: $TMPDIR]")
    ap.add_argument("--out", default=None, help="result JSON [default: scripts/benchmarks/compressed.json]")
    ap.add_argument("--child", choices=["build", "search"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--truth", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        (child_build if args.child == "build" else child_search)(args)
        return 0
    import faiss

    args.tasks = [t for t in args.tasks.split(",") if t]
    args.configs = [c for c in args.configs.split(",") if c]
    path = Path(args.out) if args.out else ROOT / "scripts" / "benchmarks" / "compressed.json"
    out = json.loads(path.read_text()) if path.is_file() else {}
    if not (args.skip_retrieval and args.skip_synthetic):  # date and command of the run that measured
        out.update({"benchmark": "compressed", "date": now_utc(), "machine": machine_info(faiss=faiss),
                    "command": "flock /tmp/embedkit-bench.lock nice python scripts/bench_compressed.py "
                               + " ".join(argv if argv is not None else sys.argv[1:])})
    if not args.skip_retrieval:
        out["retrieval"] = retrieval(args)
        write_result("compressed", out, args.out)
    elif "retrieval" in out:  # the checks are a function of the table: recomputed with the current targets
        out["retrieval"]["checks"] = checks_for(out["retrieval"]["table"])
    for c in out.get("retrieval", {}).get("checks", []):
            nums = {k: c[k] for k in ("mrr_ratio", "mrr_lost", "bytes_ratio") if k in c}
            print(f"{c['task']:6s} {c['what']:34s} {nums} ({c['target']}): {'met' if c['met'] else 'MISSED'}")
    if not args.skip_synthetic:
        out["synthetic"] = merge_rows(out.get("synthetic"), synthetic(args))
        write_result("compressed", out, args.out)
        for r in out["synthetic"]["rows"]:
            print(f"{r['config']:14s} n={r['n']}: bytes/vector {r['bytes_per_vector']}, RSS anon "
                  f"{r['rss_anon_after_search_mib']} MiB, file-backed {r['rss_file_after_search_mib']} MiB, "
                  f"p50 {r['p50_ms']} ms, recall@10 {r['recall@10']}, build {r['build_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
