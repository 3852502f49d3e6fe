"""Fault injection over every filesystem step of every index write; writes scripts/benchmarks/faults.json.

For each write (see tests/_fault_ops.py) and each mode — ``once`` (the N-th step raises ENOSPC),
``sticky`` (the disk stays full from step N on), ``kill`` (a writer process SIGKILLed before step N) —
every step N is failed in turn, and the invariants of tests/test_index_fault_injection.py are checked:
no lost commit, no phantom commit, no torn state, ``index check`` clean, the next write succeeds and
leaves no stray files. The JSON counts steps injected and each kind of violation per write and mode.

    python scripts/fault_matrix.py [--modes once,sticky,kill] [--ops add,delete,...] [--stride 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import machine_info, now_utc, write_result  # noqa: E402

from tests._fault_ops import OPS, KillServer, inject, kill_at, make_template, problems, write_pairs  # noqa: E402
from tests._fs_faults import Patcher  # noqa: E402
from tests._index_oracle import scratch_dir  # noqa: E402


def run_mode(mode: str, op: str, templates: Path, work: Path, pairs: Path, stride: int, server) -> dict:
    p = Patcher()
    dry = inject(op, 10**9, templates, work, pairs, p, p.undo)
    names = dry["names"]
    counts: Counter = Counter()
    examples = []
    committed = []
    t0 = time.perf_counter()
    for n in range(1, len(names) + 1, stride):
        if mode == "kill":
            rec = kill_at(server, op, n, templates, work, pairs)
            committed.append(rec["committed"])
        else:
            p = Patcher()
            rec = inject(op, n, templates, work, pairs, p, p.undo, sticky=mode == "sticky")
            counts["reported_done_after_fault"] += rec["error"] is None
        counts["injected"] += 1
        for problem in problems(rec):
            counts[problem] += 1
            if len(examples) < 5:
                examples.append({"step": n, "name": names[n - 1], "problem": problem,
                                 "error": rec.get("error"), "next_error": rec.get("next_error"),
                                 "check": rec.get("check"), "leftovers": rec.get("leftovers")})
    out = {"steps": len(names), "injected": counts["injected"], "lost_commits": counts["lost"],
           "phantom_commits": counts["phantom"], "torn_states": counts["torn"],
           "check_failures": counts["check"] + counts["check_after"],
           "next_write_failures": counts["next_error"] + counts["next_state"],
           "stray_files": counts["leftovers"], "unexpected_errors": counts["unexpected_error"],
           "object_diverged": counts["object_diverged"], "seconds": round(time.perf_counter() - t0, 1)}
    if mode != "kill":
        out["reported_done_after_fault"] = counts["reported_done_after_fault"]
    else:
        out["commit_order_monotone"] = all(b for a, b in zip(committed, committed[1:]) if a)
    if examples:
        out["examples"] = examples
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="once,sticky,kill")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--stride", type=int, default=1, help="fail every STRIDE-th step (1: every step)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(scratch_dir("ek-fault-matrix-"))
    templates = root / "templates"
    templates.mkdir()
    make_template(templates, "plain", lexical=False)
    make_template(templates, "lexical", lexical=True)
    pairs = write_pairs(root / "pairs.tsv")
    modes = args.modes.split(",")
    server = KillServer() if "kill" in modes else None
    results: dict = {}
    t0 = time.perf_counter()
    try:
        for op in args.ops.split(","):
            for mode in modes:
                r = run_mode(mode, op, templates, root / "work", pairs, args.stride, server)
                results.setdefault(op, {})[mode] = r
                print(f"{op:18s} {mode:6s} steps {r['steps']:4d} injected {r['injected']:4d} lost {r['lost_commits']} "
                      f"phantom {r['phantom_commits']} torn {r['torn_states']} check {r['check_failures']} "
                      f"next {r['next_write_failures']} stray {r['stray_files']} ({r['seconds']}s)", flush=True)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(root, ignore_errors=True)
    totals = Counter()
    for per_mode in results.values():
        for r in per_mode.values():
            for k in ("injected", "lost_commits", "phantom_commits", "torn_states", "check_failures",
                      "next_write_failures", "stray_files", "unexpected_errors", "object_diverged"):
                totals[k] += r[k]
    import faiss
    import numpy

    write_result("faults", {
        "what": "every filesystem step of every index write failed in turn (ENOSPC once, disk full from then "
                "on, SIGKILL of the writer process); counts of invariant violations",
        "command": "python scripts/fault_matrix.py " + " ".join(sys.argv[1:]), "stride": args.stride,
        "date": now_utc(), "machine": machine_info(numpy=numpy, faiss=faiss),
        "seconds": round(time.perf_counter() - t0, 1), "totals": dict(totals), "operations": results,
    }, args.out)


if __name__ == "__main__":
    main()
