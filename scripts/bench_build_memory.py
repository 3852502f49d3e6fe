"""Peak memory of an index build, which streams the corpus in chunks (encode -> reduce -> add).

Each configuration runs in a fresh subprocess so its peak RSS (getrusage ru_maxrss) is its own.
Modes:
  real       `embedkit index build` on N real sentences (shared STS train splits), m3e-small;
  synthetic  the same build path for N documents whose vectors come from a seeded generator instead of
             the model (for 1M-vector builds that would take an hour to encode on 2 cores).
The corpus file is written to a temp dir; the sizes of the built index are reported too.

    flock /tmp/embedkit-heavy.lock python scripts/bench_build_memory.py --real 100000 --synthetic 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "sts-zh"


def write_real_corpus(path: Path, n: int) -> int:
    seen: set[str] = set()
    with open(path, "w", encoding="utf-8") as out:
        for task in ("LCQMC", "BQ", "ATEC"):
            for line in open(SHARED / task / f"{task}.train.data", encoding="utf-8"):
                for s in line.rstrip("\n").split("\t")[:2]:
                    if s.strip() and s not in seen and len(seen) < n:
                        seen.add(s)
                        out.write(s.replace("\n", " ") + "\n")
    return len(seen)


def child(args) -> None:
    """Runs inside the subprocess: one build, then prints its peak RSS as JSON."""
    import numpy as np

    from embedkit.corpus import Doc, iter_corpus
    from embedkit.index import EmbedIndex

    t0 = time.perf_counter()
    if args.mode == "real":
        from embedkit.encoder import Encoder

        enc = Encoder(args.model)
        docs = iter_corpus(args.corpus)
    else:
        dim = 512

        class SyntheticEncoder:  # vectors from a seeded generator, same streaming build path
            def describe(self):
                return {"model": "synthetic", "pooling": "model", "max_length": 64, "backend": "torch", "dim": dim}

            def encode(self, texts, normalize=None, batch_size=None, show_progress_bar=None):
                seed = int(texts[0].split("-")[1])
                return np.random.default_rng(seed).standard_normal((len(texts), dim)).astype(np.float32)

        enc = SyntheticEncoder()
        docs = (Doc(f"d-{i}", f"s-{i}") for i in range(args.n))
    idx = EmbedIndex.build(args.out, docs, encoder=enc, reduce=args.reduce, index=args.index,
                           chunk_size=args.chunk_size, show_progress_bar=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": args.mode, "n": len(idx), "reduce": args.reduce, "index": args.index,
                      "chunk_size": args.chunk_size, "peak_rss_mib": round(peak_kib / 1024, 1),
                      "build_s": round(time.perf_counter() - t0, 1), "index_bytes": idx.info()["size_bytes"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description="peak RSS of streaming index builds")
    ap.add_argument("--real", type=int, default=100_000, help="real sentences to index (0: skip)")
    ap.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic vectors to index (0: skip)")
    ap.add_argument("--reduce", default="whitening:256")
    ap.add_argument("--index", default="ivf-flat")
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "scripts" / "benchmarks" / "build_memory.json")
    ap.add_argument("--child", choices=["real", "synthetic"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.mode, args.out = args.child, Path(args.dir)
        return child(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        if args.real:
            corpus = Path(tmp) / "corpus.txt"
            n = write_real_corpus(corpus, args.real)
            jobs.append(["--child", "real", "--n", str(n), "--corpus", str(corpus)])
        if args.synthetic:
            jobs.append(["--child", "synthetic", "--n", str(args.synthetic)])
        for i, job in enumerate(jobs):
            cmd = [sys.executable, __file__, *job, "--dir", str(Path(tmp) / f"idx{i}"), "--reduce", args.reduce,
                   "--index", args.index, "--chunk-size", str(args.chunk_size)]
            if args.model:
                cmd += ["--model", args.model]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"build failed: {out.stderr[-2000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    from bench_demo import machine  # noqa: E402  (scripts/ is on sys.path when run as a script)

    result = {"benchmark": "build_memory", "date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        vec_mib = r["n"] * 512 * 4 / 2**20
        print(f"{r['mode']:<10} n={r['n']:>8} {r['reduce']} {r['index']}: peak RSS {r['peak_rss_mib']} MiB "
              f"(all raw 512-d vectors at once would be {vec_mib:.0f} MiB), build {r['build_s']} s")


if __name__ == "__main__":
    main()
