"""Single-process vs Ray (local) encoding throughput, and Ray's per-job overhead.

Corpus: the unique sentences of the shared STS-B and LCQMC test splits; model: m3e-small.
Also checks that Ray's vectors equal the single-process ones (max abs difference).

    flock /tmp/embedkit-heavy.lock python scripts/bench_ray.py [--limit N] [--workers 2]

Writes scripts/benchmarks/ray.json. Timings are wall-clock on this machine (2 cores, shared).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from benchlib import machine_info, now_utc  # noqa: E402

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMBEDKIT_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT))


def sentences(limit: int | None) -> list[str]:
    out, seen = [], set()
    for task in ("STS-B", "LCQMC"):
        with open(SHARED / "data" / "sts-zh" / task / f"{task}.test.data", encoding="utf-8") as f:
            for line in f:
                for s in line.rstrip("\n").split("\t")[:2]:
                    if s.strip() and s not in seen:
                        seen.add(s)
                        out.append(s)
    return out[:limit] if limit else out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="Only the first N unique sentences.")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "scripts" / "benchmarks" / "ray.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from embedkit.encoder import Encoder
    from embedkit.ray_encode import encode_to_parquet
    from embedkit.ray_shards import read_vectors

    model = str(SHARED / "models" / "m3e-small")
    texts = sentences(args.limit)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        corpus = work / "s.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        tiny = work / "tiny.txt"
        tiny.write_text("\n".join(texts[:8]) + "\n", encoding="utf-8")

        t0 = time.perf_counter()
        enc = Encoder(model, batch_size=args.batch_size)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = enc.encode(texts, show_progress_bar=False)
        single_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        init_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        encode_to_parquet(tiny, work / "tiny-out", model=model, num_workers=args.workers, batch_size=args.batch_size)
        overhead_s = time.perf_counter() - t0  # actors start + load the model + schedule + write, ~no encoding
        t0 = time.perf_counter()
        s = encode_to_parquet(corpus, work / "out", model=model, num_workers=args.workers,
                              batch_size=args.batch_size)
        ray_s = time.perf_counter() - t0
        ray.shutdown()
        ids, vecs = read_vectors(work / "out")
        got = vecs[np.argsort([int(i) for i in ids])]
        diff = float(np.abs(got - ref).max())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(texts)
    result = {
        "corpus": "unique sentences of STS-B.test + LCQMC.test (shared/data/sts-zh)", "sentences": n,
        "model": "m3e-small", "max_length": 64, "batch_size": args.batch_size, "ray_workers": args.workers,
        "machine": machine_info(), "date": now_utc(), "command": "python scripts/bench_ray.py " + " ".join(sys.argv[1:]),
        "single_process": {"model_load_s": round(load_s, 2), "encode_s": round(single_s, 2),
                           "sentences_per_s": round(n / single_s, 1)},
        "ray_local": {"ray_init_s": round(init_s, 2), "job_s": round(ray_s, 2),
                      "sentences_per_s_end_to_end": round(n / ray_s, 1),
                      "sentences_per_s_excluding_job_overhead": round(n / max(ray_s - overhead_s, 1e-9), 1),
                      "per_job_overhead_s": round(overhead_s, 2), "shards": s["shards"]},
        "max_abs_diff_vs_single_process": diff, "equal_within_1e-5": diff <= 1e-5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
