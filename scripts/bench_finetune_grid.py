#!/usr/bin/env python
"""How `embedkit finetune`'s defaults were chosen (issue 18): a learning-rate x batch-size grid at equal compute.

    python scripts/bench_finetune_grid.py --task BQ --pairs-budget 1280     # -> finetune_grid_BQ.json

Every cell fine-tunes the same base model (m3e-small) with CoSENT on the first ``--train-pairs`` pairs of
the task's train split for the same number of training pairs (``--pairs-budget``; steps = pairs / batch,
so every cell costs about the same time and its warm-up and linear decay run to the end, as they do in a
finished run), and is scored by the guard's own held-back score: Spearman on the
first ``--valid-pairs`` pairs of the task's *valid* split (the test split is never looked at here, so the
choice does not leak into the test numbers of finetune_<task>.json). The recommended default is the lowest
learning rate among the cells within ``--tolerance`` (0.5) points of the best valid gain (one seed's noise;
a gentler rate overshoots less in the longer runs users make), with its best batch size. Epochs are not a grid axis: on 2 CPU
cores a 20,000-pair epoch (625 steps at batch 32) never ends inside a 30-minute budget, so the budget, not
the epoch count, ends training. Max length stays at the paper's 64 (the STS tasks' sentences are short).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_finetune import add_task_args, task_pairs  # noqa: E402
from benchlib import machine_info, now_utc, write_result  # noqa: E402


def _args_without_previous(argv) -> str:
    """The command line as recorded: ``--previous`` only skips cells whose result is already known."""
    a = list(argv if argv is not None else sys.argv[1:])
    if "--previous" in a:
        i = a.index("--previous")
        del a[i:i + 2]
    a = [x for x in a if not x.startswith("--previous=")]
    return (" " + " ".join(a)).rstrip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_task_args(ap)
    ap.add_argument("--lrs", default="1e-5,2e-5,5e-5", help="comma-separated learning rates")
    ap.add_argument("--batch-sizes", default="16,32", help="comma-separated batch sizes")
    ap.add_argument("--train-pairs", type=int, default=20000)
    ap.add_argument("--valid-pairs", type=int, default=1000)
    ap.add_argument("--pairs-budget", type=int, default=1280, help="training pairs per cell (steps = pairs / batch)")
    ap.add_argument("--evals", type=int, default=4, help="held-back evaluations per cell")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tolerance", type=float, default=0.5,
                    help="cells within this many points of the best count as tied; the lowest learning rate wins")
    ap.add_argument("--previous", default=None,
                    help="a JSON this script wrote: its cells with the same data and settings are reused, not rerun")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "embedkit", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import sentence_transformers
    import torch
    import transformers

    from embedkit.training import finetune
    from embedkit.training.run import DEFAULTS

    scale, (train, train_sha), (valid, valid_sha) = task_pairs(args)
    lrs = [float(x) for x in args.lrs.split(",")]
    batches = [int(x) for x in args.batch_sizes.split(",")]
    same = {"model": args.model, "task": args.task, "train_pairs": args.train_pairs, "valid_pairs": args.valid_pairs,
            "pairs_budget": args.pairs_budget, "evals": args.evals, "seed": args.seed}
    reuse = {}
    if args.previous:
        import json

        prev = json.loads(Path(args.previous).read_text(encoding="utf-8"))
        if all(prev["settings"].get(k) == v for k, v in same.items()) and \
                (prev["data"]["train_file_sha256"], prev["data"]["valid_file_sha256"]) == (train_sha, valid_sha):
            reuse = {(c["lr"], c["batch_size"]): c for c in prev["cells"]}
        else:
            print(f"{args.previous}: other data or settings; every cell is run", flush=True)
    cells = []
    for bs in batches:
        for lr in lrs:
            if (lr, bs) in reuse:
                cells.append(reuse[(lr, bs)] | {"reused": True})
                continue
            with tempfile.TemporaryDirectory(prefix="embedkit-grid-") as tmp:
                steps = max(1, -(-args.pairs_budget // bs))
                t0 = time.perf_counter()
                res = finetune(args.model, train, valid_pairs=valid, out_dir=Path(tmp) / "m", label_scale=scale,
                               lr=lr, batch_size=bs, max_steps=steps, eval_steps=max(1, steps // args.evals),
                               seed=args.seed, keep_anyway=True, progress=False)
                wall = time.perf_counter() - t0
            s = res.summary()
            cell = {"lr": lr, "batch_size": bs, "steps": s["steps"], "pairs_seen": s["steps"] * bs,
                    "valid_base": s["base"], "valid_best": s["best"], "delta": s["delta"],
                    "best_step": s["best_step"], "wall_s": round(wall, 1)}
            cells.append(cell)
            print(f"lr {lr:g} batch {bs}: {cell['steps']} steps, valid {cell['valid_base']} -> {cell['valid_best']} "
                  f"({cell['delta']:+.2f}) in {cell['wall_s']} s", flush=True)

    top = max(c["delta"] for c in cells)
    near = [c for c in cells if c["delta"] >= top - args.tolerance]  # within one run's noise of the best
    best = min(near, key=lambda c: (c["lr"], -c["delta"]))  # the gentlest of those: longer runs overshoot less
    res = {"benchmark": "finetune_grid", "task": args.task, "cells": cells,
           "chosen": {"lr": best["lr"], "batch_size": best["batch_size"], "delta": best["delta"], "best_delta": top,
                      "rule": f"the lowest learning rate within {args.tolerance} points of the best cell, then its best batch"},
           "defaults_before": {"lr": DEFAULTS["lr"], "batch_size": DEFAULTS["batch_size"]},
           "data": {"train_pairs": len(train), "train_file_sha256": train_sha, "valid_pairs": len(valid),
                    "valid_file_sha256": valid_sha, "label_scale": scale, "split_scored": "valid"},
           "date": now_utc(),
           "command": "python scripts/bench_finetune_grid.py" + _args_without_previous(argv),
           "machine": machine_info(torch=torch, sentence_transformers=sentence_transformers,
                                   transformers=transformers) | {"torch_threads": torch.get_num_threads()},
           "settings": {k: v for k, v in vars(args).items() if k not in ("out", "previous")}}
    print(f"chosen: lr {best['lr']:g}, batch {best['batch_size']} (valid {best['delta']:+.2f})")
    write_result(f"finetune_grid_{args.task}", res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
