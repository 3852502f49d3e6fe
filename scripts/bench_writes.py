"""What a write costs: delta segments against the full rewrite every change used to be.

For indexes of 10k, 100k and 1M synthetic vectors (d = 512, unit-norm, seeded; built through
``EmbedIndex.build_from_vectors``, the same code as a text build after encoding), one run measures:

* adding 1 document and adding 1,000 documents: bytes written (``wchar`` of /proc/self/io: every
  byte handed to write(2), fsync'ed files and the manifest included) and latency;
* the full rewrite that every change cost before delta segments (a copy of the FAISS index and the
  SQLite store written as a new generation), measured here as a forced compaction after the
  1-document add — it writes exactly those files;
* search p50 (one query, k = 10) with 0, 10 and 50 delta segments of 100 documents each, against the
  same documents compacted;
* compaction time.

    python scripts/bench_writes.py [--sizes 10000,100000,1000000] [--index flat,hnsw]

Writes scripts/benchmarks/writes.json. Run it alone (``flock /tmp/embedkit-bench.lock nice ...``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import machine_info, now_utc, percentile, write_result  # noqa: E402

from embedkit.corpus import Doc  # noqa: E402
from embedkit.index import EmbedIndex  # noqa: E402
from embedkit.querypath import QueryPath  # noqa: E402
from embedkit.reducers import make_reducer  # noqa: E402

DIM = 512
CHUNK = 20_000
TARGETS = {"one_doc_add_bytes": "O(one document), not O(N)", "search_10_segments": "<= 1.2x compacted"}


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def vectors(start: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed * 1_000_003 + start)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def docs(prefix: str, start: int, n: int) -> list[Doc]:
    return [Doc(f"{prefix}{i}", f"文档 {prefix}{i}", {"shard": i % 7}) for i in range(start, start + n)]


def build(directory: Path, n: int, index: str) -> EmbedIndex:
    qp = QueryPath(None, make_reducer("none"), "cosine",
                   encoder_config={"model": "synthetic", "pooling": "model", "max_length": 64, "dim": DIM})

    def batches():
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            yield docs("d", s, m), vectors(s, m)

    return EmbedIndex.build_from_vectors(directory, batches(), query_path=qp, index=index, expected_size=n)


def timed_write(fn) -> tuple[float, int]:
    w0, t0 = wchar(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, wchar() - w0


def search_p50(idx: EmbedIndex, queries: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for q in queries:
            t0 = time.perf_counter()
            idx.search_vectors(q[None, :], 10)
            times.append(time.perf_counter() - t0)
    return percentile(times, 50) * 1000


def run_size(work: Path, n: int, index: str, repeats: int) -> dict:
    d = work / f"{index}-{n}"
    t0 = time.perf_counter()
    idx = build(d, n, index)
    row = {"n": n, "index": index, "dim": DIM, "build_s": round(time.perf_counter() - t0, 2)}
    idx.auto_compact = False
    queries = vectors(10**9, 20, seed=3)

    s, b = timed_write(lambda: idx.add_vectors(docs("one", 0, 1), vectors(10**8, 1, seed=1)))
    row["add_1"] = {"seconds": round(s, 4), "bytes": b}
    s, b = timed_write(lambda: idx.add_vectors(docs("k", 0, 1000), vectors(10**8 + 10, 1000, seed=1)))
    row["add_1000"] = {"seconds": round(s, 4), "bytes": b}
    s, b = timed_write(idx.compact)  # what every change cost before segments: the whole base rewritten
    row["full_rewrite"] = {"seconds": round(s, 4), "bytes": b}
    row["add_1_bytes_ratio_vs_rewrite"] = round(row["add_1"]["bytes"] / max(1, b), 8)

    row["search_p50_ms"] = {"0": round(search_p50(idx, queries, repeats), 3)}
    added = 0
    for target in (10, 50):
        while len(idx.manifest["index"]["segments"]) < target:
            idx.add_vectors(docs("s", added, 100), vectors(2 * 10**8 + added, 100, seed=2))
            added += 100
        row["search_p50_ms"][str(target)] = round(search_p50(idx, queries, repeats), 3)
        if target == 10:
            snapshot = idx.directory.parent / f"{d.name}-10"
            shutil.copytree(idx.directory, snapshot)
            ten = EmbedIndex.load(snapshot)
            ten.auto_compact = False
            s, _ = timed_write(ten.compact)
            row["compacted_10_p50_ms"] = round(search_p50(ten, queries, repeats), 3)
            row["search_10_segments_ratio"] = round(row["search_p50_ms"]["10"] / row["compacted_10_p50_ms"], 3)
            shutil.rmtree(snapshot)
    s, b = timed_write(idx.compact)
    row["compaction_50"] = {"seconds": round(s, 3), "bytes": b}
    row["compacted_50_p50_ms"] = round(search_p50(idx, queries, repeats), 3)
    row["search_50_segments_ratio"] = round(row["search_p50_ms"]["50"] / row["compacted_50_p50_ms"], 3)
    shutil.rmtree(d)
    print(f"{index} n={n}: add 1 -> {row['add_1']['bytes']:,} B in {row['add_1']['seconds']*1000:.1f} ms; "
          f"full rewrite {row['full_rewrite']['bytes']:,} B in {row['full_rewrite']['seconds']:.2f} s; "
          f"search 10 seg / compacted = {row['search_10_segments_ratio']}x", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--index", default="flat,hnsw")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest size built with hnsw (build time)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-writes-", dir=ROOT / "indexes"))
    try:
        for index in args.index.split(","):
            for n in sizes:
                if index == "hnsw" and n > args.hnsw_max:
                    continue
                rows.append(run_size(work, n, index, args.repeats))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    big = max((r for r in rows if r["index"] == "flat"), key=lambda r: r["n"])
    result = {
        "benchmark": "writes", "date": now_utc(), "machine": machine_info(),
        "command": "python scripts/bench_writes.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "notes": "synthetic unit vectors d=512; bytes = wchar (all write(2) bytes); full_rewrite = forced "
                 "compaction after the 1-doc add, i.e. the files every change rewrote before delta segments; "
                 "segments of 100 documents each",
        "rows": rows,
        "targets": {
            "one_doc_add_bytes": {"target": TARGETS["one_doc_add_bytes"], "n": big["n"],
                                  "measured_bytes": big["add_1"]["bytes"],
                                  "full_rewrite_bytes": big["full_rewrite"]["bytes"],
                                  "met": big["add_1"]["bytes"] < 100_000},
            "search_10_segments": {"target": TARGETS["search_10_segments"], "n": big["n"],
                                   "measured": big["search_10_segments_ratio"],
                                   "met": big["search_10_segments_ratio"] <= 1.2},
        },
    }
    path = write_result("writes", result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
