"""A long soak of the stateful index test (tests/test_index_stateful.py); writes scripts/benchmarks/soak.json.

Runs the hypothesis state machines (flat: exact against the model; HNSW: recall floor) with fresh random
seeds until ``--steps`` rule steps have run, with ``--workers`` second-process writers (real OS
processes, each a long-lived ``tests/procs/stateful_worker.py`` that keeps its own index object across
commands). A failing run is counted as a divergence and recorded (without shrinking: rerun the CI test
with its seed to shrink), and the soak goes on. What it covers: everything the CI test covers (adds,
re-adds, deletes, compactions, automatic ones included, the lexical part, calibration, rebuilds,
reloads, two writer processes, dense/lexical/hybrid searches with k and filters, get, len); not a
running ``embedkit serve`` (tests/test_index_concurrency.py covers the server with writer processes).

    python scripts/soak_index.py --steps 100000 --workers 2        # the long run (about 20-40 min on 2 cores)
    python scripts/soak_index.py --steps 3000 --out /tmp/soak.json # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchlib import machine_info, now_utc, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000, help="rule steps to run in all (target)")
    ap.add_argument("--workers", type=int, default=2, help="second-process writers (1 or 2)")
    ap.add_argument("--hnsw-share", type=float, default=0.2, help="share of runs on an HNSW index")
    ap.add_argument("--examples", type=int, default=20, help="state machine runs per batch")
    ap.add_argument("--max-failures", type=int, default=20, help="stop after this many divergences")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import logging

    import faiss
    import hypothesis
    import numpy
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    from tests import test_index_stateful as t

    logging.disable(logging.WARNING)   # "no --tune-pairs given" on every lexical build
    t.IndexMachine.WORKERS = max(1, min(2, args.workers))
    cfg = settings(max_examples=args.examples, stateful_step_count=50, derandomize=False, database=None,
                   deadline=None, phases=[Phase.generate], print_blob=False,
                   suppress_health_check=list(HealthCheck))
    t0 = time.perf_counter()
    failures, batches = [], {"flat": 0, "hnsw": 0}
    while t.STEPS["total"] < args.steps and len(failures) < args.max_failures:
        total = batches["flat"] + batches["hnsw"]
        kind = "hnsw" if total and batches["hnsw"] < args.hnsw_share * (total + 1) else "flat"
        machine = t.HnswMachine if kind == "hnsw" else t.IndexMachine
        batches[kind] += 1
        try:
            run_state_machine_as_test(machine, settings=cfg)
        except Exception as e:  # noqa: BLE001 - a divergence from the model: record it and go on
            failures.append({"index": kind, "after_steps": t.STEPS["total"], "error": f"{type(e).__name__}: {e}"[:3000],
                             "traceback": traceback.format_exc()[-3000:]})
            print(f"DIVERGENCE on {kind}: {str(e)[:300]}", file=sys.stderr, flush=True)
        print(f"{t.STEPS['total']} steps, {t.STEPS['runs']} runs, {len(failures)} divergences, "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    t._close_workers()
    write_result("soak", {
        "what": "stateful property test of the index against an in-memory model (tests/test_index_stateful.py), "
                "random seeds, second-process writers; a divergence is any failed check",
        "command": "python scripts/soak_index.py " + " ".join(sys.argv[1:]),
        "date": now_utc(), "machine": machine_info(numpy=numpy, faiss=faiss, hypothesis=hypothesis),
        "target_steps": args.steps, "steps": t.STEPS["total"], "runs": t.STEPS["runs"],
        "batches": batches, "writer_processes": t.IndexMachine.WORKERS, "server": False,
        "divergences": len(failures), "failures": failures[:5],
        "seconds": round(time.perf_counter() - t0, 1),
    }, args.out)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
