"""Benchmark (issue 11): does `auto` choose well, is the calibrated probability calibrated, does t2s help?

For m3e-small and albert-tiny-chinese on the test splits of ATEC, BQ, LCQMC and STS-B, protocol
fit-valid (every reducer fitted on the valid split; `auto` chooses on the valid split's labels; the
threshold and the isotonic probability are fitted on valid; test is only scored), one `embedkit eval`
grid holds `auto`, `none` and every fixed candidate of auto's grid.  It reports, side by side:

* `auto` vs `none` vs the best fixed candidate chosen in hindsight (best test average), test Spearman;
* ECE (10 bins) of the calibrated probability on ATEC, BQ, LCQMC;
* accuracy at the threshold fitted on valid vs the best threshold chosen on test in hindsight;
* albert-tiny-chinese (pretrained on Traditional Chinese) on STS-B with `--normalize` none, t2s and s2t.

Encoding every pair costs 20+ CPU-minutes, so each split is capped (``--cap``, default the first 2000
pairs of valid and of test; STS-B is smaller than that); the cap is recorded in the JSON.

    flock /tmp/embedkit-bench.lock nice .venv/bin/python scripts/bench_calibration.py [--cap N]

Prints the tables and writes scripts/benchmarks/calibration.json (full eval reports go to
reports/bench-calibration/<model>/, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import RESULTS_DIR, machine_info, now_utc

from embedkit.evaluation.evaluator import run_grid
from embedkit.evaluation.report import write_report
from embedkit.fsutil import atomic_write_json
from embedkit.reducers import AutoReducer

TASKS = ["ATEC", "BQ", "LCQMC", "STS-B"]
BINARY = ["ATEC", "BQ", "LCQMC"]
MODELS = ["m3e-small", "albert-tiny-chinese"]
TARGETS = {"auto_vs_best_fixed": 0.3, "auto_vs_none_per_task": 0.3, "ece_max": 0.03, "accuracy_gap": 1.0}


def _dim(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return int(cfg.get("hidden_size") or cfg["dim"])


def _x100(v):
    return None if v is None or not math.isfinite(v) else round(v * 100, 2)


def summarise(res: dict, model: str) -> dict:
    cells = [c for c in res["cells"] if c["split"] == "test"]
    by = {(c["reducer"], c["task"]): c for c in cells}
    tasks = [t for t in TASKS if (("none", t) in by)]
    specs = list(dict.fromkeys(c["reducer"] for c in cells))

    def avg(spec):
        vals = [by[(spec, t)]["spearman"] for t in tasks if (spec, t) in by]
        return sum(vals) / len(vals) if len(vals) == len(tasks) and all(math.isfinite(v) for v in vals) else math.nan

    fixed = [s for s in specs if s != "auto"]
    best_fixed = max(fixed, key=lambda s: avg(s) if math.isfinite(avg(s)) else -9)
    per_task = {}
    for t in tasks:
        a, n, b = by[("auto", t)], by[("none", t)], by[(best_fixed, t)]
        row = {"auto": _x100(a["spearman"]), "auto_choice": a["auto"]["choice"], "none": _x100(n["spearman"]),
               "best_fixed": _x100(b["spearman"]), "best_fixed_per_task": max(
                   ((s, by[(s, t)]["spearman"]) for s in fixed if math.isfinite(by[(s, t)]["spearman"])),
                   key=lambda x: x[1])[0]}
        row["auto_minus_none"] = round(row["auto"] - row["none"], 2)
        for name, c in (("auto", a), ("none", n)):
            k = c.get("classification")
            if k and not k.get("error"):
                row[f"{name}_classification"] = {
                    "auc": _x100(k["auc"]), "accuracy_at_fitted_threshold": _x100(k["accuracy"]),
                    "accuracy_best_threshold_on_test": _x100(k["accuracy_best_in_hindsight"]),
                    "accuracy_gap": round((k["accuracy_best_in_hindsight"] - k["accuracy"]) * 100, 2),
                    "f1_at_fitted_threshold": _x100(k["f1"]), "ece_isotonic": round(k["ece"], 4),
                    "ece_platt": round(k["ece_platt"], 4), "calibrated_on": k["calibrated_on"]}
        per_task[t] = row
    out = {"model": model, "tasks": per_task, "best_fixed_in_hindsight": best_fixed,
           "avg": {"auto": _x100(avg("auto")), "none": _x100(avg("none")), "best_fixed": _x100(avg(best_fixed))}}
    out["targets"] = {
        "auto_avg_within_0.3_of_best_fixed": out["avg"]["auto"] >= out["avg"]["best_fixed"] - 0.3,
        "auto_never_0.3_below_none": all(r["auto_minus_none"] >= -0.3 for r in per_task.values()),
        "ece_le_0.03": {t: per_task[t]["auto_classification"]["ece_isotonic"] <= 0.03 for t in BINARY
                        if "auto_classification" in per_task.get(t, {})},
        "accuracy_within_1_point": {t: per_task[t]["auto_classification"]["accuracy_gap"] <= 1.0 for t in BINARY
                                    if "auto_classification" in per_task.get(t, {})}}
    if "albert" in model:
        out["targets"]["auto_beats_none"] = out["avg"]["auto"] > out["avg"]["none"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.relpath(ROOT.parent / "shared" / "data" / "sts-zh"))
    ap.add_argument("--models-dir", default=os.path.relpath(ROOT.parent / "shared" / "models"))
    ap.add_argument("--cap", type=int, default=2000, help="first N pairs of each valid and test split")
    ap.add_argument("--cache-dir", default=".eval-cache")
    ap.add_argument("--out", default=str(RESULTS_DIR / "calibration.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    summaries, t2s = [], None
    for name in MODELS:
        mdir = Path(args.models_dir) / name
        specs = ["auto"] + [r.spec for r, *_ in AutoReducer().candidates(_dim(mdir))]
        common = {"models": [str(mdir)], "protocol": "fit-valid", "splits": ["test"], "limit": args.cap,
                      "cache_dir": args.cache_dir, "progress": False}
        res = run_grid(args.data, tasks=TASKS, reducers=specs, **common)
        write_report(res, ROOT / "reports" / "bench-calibration" / name)
        summaries.append(summarise(res, name))
        if "albert" in name:
            base = summaries[-1]["tasks"]["STS-B"]
            t2s = {"model": name, "task": "STS-B", "split": "test", "note": (
                "the STS data are Simplified Chinese, so t2s barely changes them; s2t converts them to the "
                "Traditional script the model was pretrained on")}
            for mode in ("t2s", "s2t"):
                norm = run_grid(args.data, tasks=["STS-B"], reducers=["none", "auto"], normalize=mode, **common)
                got = {c["reducer"]: _x100(c["spearman"]) for c in norm["cells"]}
                t2s[mode] = {"none": got["none"], "auto": got["auto"],
                             "none_delta": round(got["none"] - base["none"], 2),
                             "auto_delta": round(got["auto"] - base["auto"], 2),
                             "auto_choice": next(c["auto"]["choice"] for c in norm["cells"] if c["reducer"] == "auto")}
            t2s["plain"] = {"none": base["none"], "auto": base["auto"]}
    out = {"benchmark": "calibration", "date": now_utc(), "machine": machine_info(),
           "settings": {"protocol": "fit-valid", "tasks": TASKS, "split_scored": "test",
                        "cap_pairs_per_split": args.cap, "cap_note": f"first {args.cap} pairs of each valid "
                        "and test split (STS-B has fewer: all of them)", "pooling": "model", "max_length": 64,
                        "auto_grid": "none + beta,gamma in {0,0.5,1} x k in {64,128,256,full}"},
           "command": f"flock /tmp/embedkit-bench.lock nice .venv/bin/python scripts/bench_calibration.py --cap {args.cap}",
           "models": summaries, "text_normalisation": t2s, "targets": TARGETS, "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(args.out, out)
    for s in summaries:
        print(f"\n{s['model']}: test Spearman x 100 (best fixed in hindsight: {s['best_fixed_in_hindsight']})")
        print("| task | none | auto (choice) | best fixed | auto-none | AUC | acc@fit | acc best | ECE |")
        print("|---|---|---|---|---|---|---|---|---|")
        for t, r in s["tasks"].items():
            k = r.get("auto_classification", {})
            print(f"| {t} | {r['none']} | {r['auto']} ({r['auto_choice']}) | {r['best_fixed']} | "
                  f"{r['auto_minus_none']:+.2f} | {k.get('auc', '—')} | {k.get('accuracy_at_fitted_threshold', '—')} | "
                  f"{k.get('accuracy_best_threshold_on_test', '—')} | {k.get('ece_isotonic', '—')} |")
        print(f"| avg | {s['avg']['none']} | {s['avg']['auto']} | {s['avg']['best_fixed']} | | | | | |")
        print("targets:", json.dumps(s["targets"]))
    if t2s:
        print("\ntext normalisation, albert-tiny-chinese STS-B test:", json.dumps(t2s, ensure_ascii=False))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
