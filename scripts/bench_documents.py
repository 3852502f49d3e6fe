#!/usr/bin/env python
"""Long-document retrieval: CMRC 2018 dev (questions over Wikipedia passages) read four ways, each a real
embedkit index (flat), side by side in one run; the hybrid weight is tuned on CMRC trial.

    python scripts/bench_documents.py                       # -> scripts/benchmarks/documents.json
    python scripts/bench_documents.py --max-queries 300     # a quicker look (not for the README)

Settings: ``truncate`` (the first 64 tokens, what embedkit did before passages), ``truncate:512``
(the model's limit), ``passages`` and the default passages (``index build``'s defaults). ``concat4``
joins every 4 consecutive passages into one document (median ~1,800 characters). Reports MRR@10,
R@1, R@10, nDCG@10 (ir-measures), vectors per document, index bytes and build seconds, and the
issue's targets with met / missed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import machine_info, now_utc, shared_path, write_result  # noqa: E402

TARGETS = {  # issue 17, MRR@10
    "dense_default_plain": 96.5, "dense_default_concat4": 96.0, "hybrid_plain": 98.8, "hybrid_concat4": 98.4,
    "plain_concat4_gap": 0.5, "build_vs_truncate512": 1.5,
}


def targets(rows: list[dict], default: str) -> list[dict]:
    by = {(r["task"].endswith("concat4"), r["setting"], r["mode"]): r for r in rows}
    out = []

    def add(name, value, target, ok):
        out.append({"target": name, "value": value, "goal": target, "met": bool(ok)})

    for c4, tag in ((False, "plain"), (True, "concat4")):
        d = by.get((c4, default, "dense"))
        h = by.get((c4, default, "hybrid"))
        if d:
            add(f"dense_default_{tag}", d["mrr@10"], TARGETS[f"dense_default_{tag}"],
                d["mrr@10"] >= TARGETS[f"dense_default_{tag}"])
        if h:
            add(f"hybrid_{tag}", h["mrr@10"], TARGETS[f"hybrid_{tag}"], h["mrr@10"] >= TARGETS[f"hybrid_{tag}"])
    p, c = by.get((False, default, "dense")), by.get((True, default, "dense"))
    if p and c:
        gap = round(p["mrr@10"] - c["mrr@10"], 2)
        add("plain_concat4_gap", gap, TARGETS["plain_concat4_gap"], gap <= TARGETS["plain_concat4_gap"])
    for c4, tag in ((False, "plain"), (True, "concat4")):
        a, b = by.get((c4, default, "dense")), by.get((c4, "truncate:512", "dense"))
        if a and b and b["build_seconds"]:
            ratio = round(a["build_seconds"] / b["build_seconds"], 2)
            add(f"build_vs_truncate512_{tag}", ratio, TARGETS["build_vs_truncate512"],
                ratio <= TARGETS["build_vs_truncate512"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(shared_path("models", "m3e-small")))
    ap.add_argument("--dev", default=str(shared_path("data", "cmrc2018", "cmrc2018_dev.json")))
    ap.add_argument("--trial", default=str(shared_path("data", "cmrc2018", "cmrc2018_trial.json")))
    ap.add_argument("--read", default="truncate,truncate:512,passages",
                    help="reading settings (embedkit eval --read); 'passages' is index build's default")
    ap.add_argument("--concat", default="1,4")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("embedkit.index.build", "embedkit.index.hybrid", "sentence_transformers", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import faiss
    import torch

    from embedkit.evaluation.documents import markdown_table, run_documents_eval

    torch.set_num_threads(2)
    res = run_documents_eval(args.dev, model=args.model, settings=args.read.split(","),
                             concats=[int(c) for c in args.concat.split(",")], modes=("dense", "lexical", "hybrid"),
                             tune_path=args.trial, max_queries=args.max_queries)
    res.update({"benchmark": "documents", "date": now_utc(), "machine": machine_info(torch=torch, faiss=faiss),
                "command": "python scripts/bench_documents.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
                "default_setting": "passages", "targets": targets(res["rows"], "passages")})
    print(markdown_table(res))
    for t in res["targets"]:
        print(f"{t['target']}: {t['value']} (goal {t['goal']}): {'met' if t['met'] else 'MISSED'}")
    if args.max_queries is None or args.out:
        write_result("documents", res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
