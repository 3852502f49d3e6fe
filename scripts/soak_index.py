"""A long soak of the stateful tests of the index and of a running server; writes scripts/benchmarks/soak.json.

Runs hypothesis state machines with fresh random seeds until ``--steps`` rule steps have run, a share of
the batches on each of three machines:

* flat and HNSW (tests/test_index_stateful.py): the library against an in-memory model (flat exactly, HNSW
  to a recall floor) with a fake encoder, ``--workers`` second-process writers (real OS processes, each
  a long-lived ``tests/procs/stateful_worker.py`` keeping its index object across commands): adds,
  re-adds, deletes, compactions (automatic ones too), the lexical part, calibration, rebuilds, reloads,
  dense/lexical/hybrid searches with k and filters, get, len;
* server (tests/_server_machine.py, ``--server-share`` of the batches): one real ``embedkit serve``
  (127.0.0.1, the tiny model of ../shared/models, started once per soak) over a flat index with a lexical
  part, two more writer processes and a library object in this process, all with the same model. Adds
  and deletes go through REST, the writer processes and the library, one at a time and all three at once
  with a contested id; refused REST adds (existing or repeated ids, NaN or 65-bit metadata, blank text)
  must leave no trace. After every step REST must equal the model exactly: GET of every touched id (no
  lost, no phantom write; one winner per contested id), /health's count, and dense, lexical and hybrid
  searches through REST against the exact oracles. Every rule is one step, REST ones included.

A failing run is counted as a divergence and recorded (without shrinking: rerun the CI tests with their
seed to shrink), and the soak goes on. At the end the server's own counters (requests by status from
/metrics) are recorded; any 5xx answer and any traceback in its log count as divergences too.

    python scripts/soak_index.py --steps 100000 --workers 2        # the long run (~45 min on 2 busy cores)
    python scripts/soak_index.py --steps 3000 --out /tmp/soak.json # a quick check (~2.5 min, ~25 s of it startup)
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


def _pick(batches: dict, shares: dict) -> str:
    """The machine furthest behind its share of the batches run so far (flat first)."""
    total = sum(batches.values()) + 1
    return max(shares, key=lambda k: (shares[k] * total - batches[k], k == "flat"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000, help="rule steps to run in all (target)")
    ap.add_argument("--workers", type=int, default=2, help="second-process writers of the library machines (1 or 2)")
    ap.add_argument("--hnsw-share", type=float, default=0.2, help="share of batches on an HNSW index")
    ap.add_argument("--server-share", type=float, default=0.3,
                    help="share of batches on the server machine (0: no server)")
    ap.add_argument("--examples", type=int, default=20, help="state machine runs per batch")
    ap.add_argument("--max-failures", type=int, default=20, help="stop after this many divergences")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import logging

    import faiss
    import hypothesis
    import numpy
    import torch
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    from embedkit.encoder import Encoder
    from tests import _server_machine as sm
    from tests import test_index_stateful as t
    from tests.conftest import TINY

    logging.disable(logging.WARNING)   # "no --tune-pairs given" on every lexical build
    torch.set_num_threads(1)           # the oracle's query vectors: one text at a time, no thread teams
    t.IndexMachine.WORKERS = max(1, min(2, args.workers))
    shares = {"flat": 1 - args.hnsw_share - args.server_share, "hnsw": args.hnsw_share, "server": args.server_share}
    machines = {"flat": t.IndexMachine, "hnsw": t.HnswMachine, "server": sm.ServerMachine}
    cfg = settings(max_examples=args.examples, stateful_step_count=50, derandomize=False, database=None,
                   deadline=None, phases=[Phase.generate], print_blob=False,
                   suppress_health_check=list(HealthCheck))
    t0 = time.perf_counter()
    backend = sm.ServerMachine.backend = sm.Backend(Encoder(str(TINY))) if args.server_share > 0 else None
    failures, batches = [], dict.fromkeys(shares, 0)
    while t.STEPS["total"] < args.steps and len(failures) < args.max_failures:
        kind = _pick(batches, shares)
        batches[kind] += 1
        try:
            run_state_machine_as_test(machines[kind], settings=cfg)
        except Exception as e:  # noqa: BLE001 - a divergence from the model: record it and go on
            failures.append({"machine": kind, "after_steps": t.STEPS["total"], "error": f"{type(e).__name__}: {e}"[:3000],
                             "traceback": traceback.format_exc()[-3000:]})
            print(f"DIVERGENCE on {kind}: {str(e)[:300]}", file=sys.stderr, flush=True)
        print(f"{t.STEPS['total']} steps ({t.STEPS['server']} server, {t.STEPS['rest']} REST), {t.STEPS['runs']} runs, "
              f"{len(failures)} divergences, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    t._close_workers()
    server = backend.close() if backend is not None else None
    if server is not None:
        for what in ("5xx", "log_tracebacks"):
            if server[what]:
                failures.append({"machine": "server", "error": f"the server had {server[what]} {what}"})
        if server["starts"] != 1 or not server["alive_at_end"]:
            failures.append({"machine": "server", "error": f"the server died during the soak: {server}"})
    write_result("soak", {
        "what": "stateful property tests against an in-memory model, random seeds: the library (flat exactly, "
                "HNSW to a recall floor; tests/test_index_stateful.py) with second-process writers, and a running "
                "embedkit serve with two writer processes and the library (tests/_server_machine.py; REST "
                "gets and searches exactly against the model, no lost or phantom writes, one winner per "
                "contested id); a divergence is any failed check, any 5xx and any traceback in the server's log",
        "command": "python scripts/soak_index.py " + " ".join(sys.argv[1:]),
        "date": now_utc(), "machine": machine_info(numpy=numpy, faiss=faiss, hypothesis=hypothesis),
        "target_steps": args.steps, "steps": t.STEPS["total"], "runs": t.STEPS["runs"],
        "steps_by_machine": {k: t.STEPS[k] for k in machines}, "rest_steps": t.STEPS["rest"],
        "batches": batches, "writer_processes": t.IndexMachine.WORKERS, "server": server is not None,
        "server_writer_processes": len(sm.WRITERS) - 1 if server is not None else 0, "server_stats": server,
        "divergences": len(failures), "failures": failures[:5],
        "seconds": round(time.perf_counter() - t0, 1),
    }, args.out)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
