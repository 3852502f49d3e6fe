"""Issue-2 figures for the bundled demo corpus: index build time, search latency and size on disk,
with and without whitening:256, for the flat and hnsw backends. Writes scripts/benchmarks/demo.json.

    flock /tmp/embedkit-heavy.lock python scripts/bench_demo.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model dir/id (default: embedkit's default, m3e-small)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the demo queries")
    ap.add_argument("--out", type=Path, default=ROOT / "scripts" / "benchmarks" / "demo.json")
    args = ap.parse_args()

    from embedkit.corpus import read_corpus
    from embedkit.encoder import Encoder
    from embedkit.index import EmbedIndex

    docs = read_corpus(ROOT / "embedkit" / "data" / "demo_zh.jsonl")
    queries = [q for q in (ROOT / "embedkit" / "data" / "demo_queries.txt").read_text("utf-8").splitlines() if q]
    enc = Encoder(args.model)
    enc.encode(queries[:4])  # warm-up
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        EmbedIndex.build(Path(tmp) / "warm-up", docs, encoder=enc, show_progress_bar=False)  # not timed
        built = []
        for reduce in ("none", "whitening:256"):
            for kind in ("flat", "hnsw"):
                t0 = time.perf_counter()
                idx = EmbedIndex.build(Path(tmp) / f"{kind}-{reduce}", docs, encoder=enc, reduce=reduce,
                                       index=kind, show_progress_bar=False)
                built.append((idx, time.perf_counter() - t0, idx.embed(queries), [], []))
        # timed passes interleave the configurations, so machine noise hits them alike
        for _ in range(args.repeats):
            for idx, _, qv, one, search_only in built:
                for q, v in zip(queries, qv):
                    t = time.perf_counter()
                    idx.search(q, 10)
                    one.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    idx.search_vectors(v[None], 10)
                    search_only.append(time.perf_counter() - t)
        for idx, build_s, _, one, search_only in built:
            rows.append({"reduce": idx.manifest["reducer"]["spec"], "index": idx.manifest["index"]["type"],
                         "docs": len(idx), "dim": idx.dim, "build_s": round(build_s, 2),
                         "query_ms_p50": round(statistics.median(one) * 1000, 2),
                         "search_only_ms_p50": round(statistics.median(search_only) * 1000, 3),
                         "size_bytes": idx.info()["size_bytes"],
                         "faiss_bytes": (idx.generation / "index.faiss").stat().st_size,
                         "reducer_bytes": sum(p.stat().st_size for p in idx.generation.glob("reducer.*"))})
            print(json.dumps(rows[-1]), file=sys.stderr)
    base = {r["index"]: r["size_bytes"] for r in rows if r["reduce"] == "none"}
    base_faiss = {r["index"]: r["faiss_bytes"] for r in rows if r["reduce"] == "none"}
    for r in rows:
        r["size_vs_none"] = round(r["size_bytes"] / base[r["index"]], 3)
        r["faiss_vs_none"] = round(r["faiss_bytes"] / base_faiss[r["index"]], 3)
    result = {"benchmark": "demo", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "model": enc.model_name, "queries": len(queries), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    print(f"{'reduce':<14}{'index':<6}{'dim':>5}{'build s':>9}{'query ms':>10}{'search ms':>11}"
          f"{'total KiB':>11}{'faiss KiB':>11}{'reducer KiB':>13}{'faiss/none':>12}")
    for r in rows:
        print(f"{r['reduce']:<14}{r['index']:<6}{r['dim']:>5}{r['build_s']:>9}{r['query_ms_p50']:>10}"
              f"{r['search_only_ms_p50']:>11}{r['size_bytes'] / 1024:>11.0f}{r['faiss_bytes'] / 1024:>11.0f}"
              f"{r['reducer_bytes'] / 1024:>13.0f}{r['faiss_vs_none']:>12}")


def machine() -> dict:
    import os

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem, 1), "python": platform.python_version()}


if __name__ == "__main__":
    main()
