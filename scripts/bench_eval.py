"""Benchmark: is `embedkit eval` bound by encoding?

Evaluates m3e-small with no reduction on the four shared tasks' test splits with an empty encoding
cache, and compares the time spent inside the encoder with everything else the evaluation adds (data
loading, cache writes, the metric, the report with its figures).  Issue 3's target: the overhead is
under 5% of the encoding time.  Model loading (a fixed ~1 s) is reported separately.  A second pass
adds whitening:256, pca:256 and jl:256 on the cached vectors to show what reducers cost.

    flock /tmp/embedkit-heavy.lock .venv/bin/python scripts/bench_eval.py [--limit N] [--cache-dir DIR]

Prints the ratios and writes scripts/benchmarks/eval_overhead.json.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from benchlib import machine_info, now_utc  # noqa: E402

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedkit.evaluation.evaluator import run_grid  # noqa: E402
from embedkit.evaluation.report import write_report  # noqa: E402
from embedkit.fsutil import atomic_write_json  # noqa: E402

TASKS = ["ATEC", "BQ", "LCQMC", "STS-B"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sts-zh"))
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "m3e-small"))
    ap.add_argument("--limit", type=int, default=None, help="first N pairs per split (quick check)")
    ap.add_argument("--cache-dir", default=None,
                    help="encoding cache to fill (must not hold these encodings yet) [default: a temp dir]")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "benchmarks" / "eval_overhead.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        res = run_grid(args.data, tasks=TASKS, models=[args.model], reducers=["none"], splits=["test"],
                       limit=args.limit, cache_dir=cache, progress=False)
        write_report(res, Path(tmp) / "report")
        wall = time.perf_counter() - t0
        t = res["timings"]
        if res["cache"]["hits"]:
            print(f"warning: {res['cache']['hits']} cache hits; the encoding time is not measured. "
                  "Use an empty --cache-dir.", file=sys.stderr)
        encode = t["encode_s"]
        other = wall - encode - t["model_load_s"]
        # second pass: the three reducers on the cached vectors (no encoding)
        t1 = time.perf_counter()
        res2 = run_grid(args.data, tasks=TASKS, models=[args.model], splits=["test"], limit=args.limit,
                        reducers=["none", "whitening:256", "pca:256", "jl:256"], cache_dir=cache,
                        progress=False)
        write_report(res2, Path(tmp) / "report2")
        wall2 = time.perf_counter() - t1
        other2 = wall2 - res2["timings"]["encode_s"] - res2["timings"]["model_load_s"]

    out = {
        "benchmark": "eval_overhead",
        "what": "m3e-small, no reduction, test splits of ATEC/BQ/LCQMC/STS-B, empty cache; "
                "overhead = wall - encode - model load (data, cache writes, metric, report+figures)",
        "limit": args.limit,
        "n_pairs": sum(c["n_pairs"] for c in res["cells"]),
        "n_sentences_encoded": res["cache"]["n_encoded"],
        "wall_s": round(wall, 3),
        "encode_s": encode,
        "model_load_s": t["model_load_s"],
        "overhead_s": round(other, 3),
        "overhead_ratio": round(other / encode, 4) if encode else None,
        "overhead_ratio_incl_model_load": round((other + t["model_load_s"]) / encode, 4) if encode else None,
        "breakdown_s": {k: t[k] for k in ("load_data_s", "cache_io_s", "reduce_score_s", "report_s")},
        "target_ratio": 0.05,
        "with_3_reducers_cached": {"wall_s": round(wall2, 3), "overhead_s": round(other2, 3),
                                   "overhead_ratio_vs_encode": round(other2 / encode, 4) if encode else None,
                                   "reduce_score_s": res2["timings"]["reduce_score_s"],
                                   "report_s": res2["timings"]["report_s"]},
        "spearman_x100": {c["task"]: round(c["spearman"] * 100, 2) for c in res["cells"]},
        "machine": machine_info(), "date": now_utc(), "command": "python scripts/bench_eval.py " + " ".join(sys.argv[1:]),
        "versions": res["versions"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, out)
    print(f"encode {encode:.1f}s for {out['n_sentences_encoded']} sentences; everything else "
          f"{other:.2f}s -> overhead {100 * out['overhead_ratio']:.2f}% of encoding "
          f"(target < 5%; {100 * out['overhead_ratio_incl_model_load']:.2f}% counting model load)")
    print(f"with whitening/pca/jl:256 on cached vectors: {other2:.2f}s "
          f"({100 * out['with_3_reducers_cached']['overhead_ratio_vs_encode']:.2f}% of the encoding time)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
