#!/usr/bin/env python
"""Encoding speed and quality: embedkit's Encoder (torch, onnx, onnx-int8) vs plain sentence-transformers.

Both sides run in this one process on the same model, texts, thread count, max_length and batch
size; the sides are interleaved in chunks of 1,000 sentences (every side encodes a chunk, in rotating
order, before the next chunk), and the script reports per side the median over rounds of
sentences/s and of the ratio to plain sentence-transformers.
It then measures Spearman (x100, cosine vs label) on STS-B test (all pairs) and LCQMC test (all
pairs unless --lcqmc-pairs is given) for the torch fp32 path and the two ONNX paths.

    flock /tmp/embedkit-heavy.lock python scripts/bench_encode.py            # full run
    flock /tmp/embedkit-heavy.lock python scripts/bench_encode.py --n 2000 --rounds 1 --lcqmc-pairs 500

Writes scripts/benchmarks/encode.json (use --out to write elsewhere).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

SIDES = ("sentence-transformers", "embedkit-torch", "embedkit-onnx", "embedkit-onnx-int8")
BACKEND_OF = {"embedkit-torch": "torch", "embedkit-onnx": "onnx", "embedkit-onnx-int8": "onnx-int8"}
SPEED_TASKS = ("LCQMC", "BQ", "ATEC", "STS-B")
TARGET_RATIO = 2.0
TARGET_SPEARMAN_DELTA = 0.5


# -- data ------------------------------------------------------------------------------------------
def _unquote(field: str) -> str:
    # senteval_cn files write a field containing '"' CSV-style: "a""b" -> a"b
    if len(field) >= 2 and field[0] == '"' and field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def read_pairs(task: str, split: str = "test", limit: int | None = None):
    path = benchlib.shared_path("data", "sts-zh", task, f"{task}.{split}.data")
    s1, s2, y = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            s1.append(_unquote(parts[0]))
            s2.append(_unquote(parts[1]))
            y.append(float(parts[2]))
            if limit and len(y) >= limit:
                break
    return s1, s2, np.asarray(y, dtype=np.float64)


def speed_texts(n: int, seed: int) -> list[str]:
    seen, texts = set(), []
    for task in SPEED_TASKS:
        a, b, _ = read_pairs(task)
        for t in a + b:
            if t and t not in seen:
                seen.add(t)
                texts.append(t)
    random.Random(seed).shuffle(texts)
    if n > len(texts):
        print(f"note: only {len(texts)} distinct test sentences; using all of them", file=sys.stderr)
    return texts[:n]


# -- sides -----------------------------------------------------------------------------------------
def make_sides(model: str, args) -> dict:
    from sentence_transformers import SentenceTransformer

    from embedkit.encoder import Encoder

    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = args.max_length
    st.eval()
    sides = {"sentence-transformers":
             lambda texts: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)}
    encoders = {}
    for side, backend in BACKEND_OF.items():
        t0 = time.perf_counter()
        enc = Encoder(model, pooling="model", max_length=args.max_length, batch_size=args.batch_size,
                      device="cpu", backend=backend)
        print(f"{side}: ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        encoders[backend] = enc
        sides[side] = (lambda e: lambda texts: e.encode(texts, show_progress_bar=False))(enc)
    return sides, encoders


def bench_speed(sides: dict, texts: list[str], rounds: int, chunk: int) -> dict:
    """Each round walks the texts in chunks; every chunk is encoded by every side back to back (the
    side order rotates per chunk), so load changes on a shared machine hit all sides alike."""
    for fn in sides.values():  # warm-up (allocators, ORT arenas, tokenizer caches)
        fn(texts[:256])
    names = list(sides)
    per = {s: [] for s in sides}
    step = 0
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for c in range(0, len(texts), chunk):
            part = texts[c:c + chunk]
            order = names[step % len(names):] + names[:step % len(names)]
            step += 1
            for side in order:
                t0 = time.perf_counter()
                sides[side](part)
                spent[side] += time.perf_counter() - t0
        for side in names:
            per[side].append(len(texts) / spent[side])
            print(f"round {r + 1}/{rounds} {side:22s} {per[side][-1]:8.1f} sentences/s", file=sys.stderr)
    base = per["sentence-transformers"]
    out = {}
    for side, xs in per.items():
        ratios = [x / b for x, b in zip(xs, base)]
        out[side] = {"sentences_per_s": round(benchlib.median(xs), 1),
                     "rounds_sentences_per_s": [round(x, 1) for x in xs],
                     "ratio_vs_sentence_transformers": round(benchlib.median(ratios), 3),
                     "rounds_ratio": [round(x, 3) for x in ratios]}
    return out


# -- quality ---------------------------------------------------------------------------------------
def spearman_x100(encode, s1, s2, y) -> float:
    from scipy.stats import spearmanr

    uniq = list(dict.fromkeys(s1 + s2))
    pos = {t: i for i, t in enumerate(uniq)}
    v = encode(uniq)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    a = v[[pos[t] for t in s1]]
    b = v[[pos[t] for t in s2]]
    cos = (a * b).sum(1)
    return float(spearmanr(cos, y).correlation * 100)


def bench_quality(encoders: dict, lcqmc_pairs: int | None) -> dict:
    tasks = {"STS-B": read_pairs("STS-B"), "LCQMC": read_pairs("LCQMC", limit=lcqmc_pairs)}
    out = {}
    for task, (s1, s2, y) in tasks.items():
        row = {"pairs": int(len(y))}
        for backend, enc in encoders.items():
            t0 = time.perf_counter()
            row[backend] = round(spearman_x100(lambda t: enc.encode(t, show_progress_bar=False), s1, s2, y), 3)
            print(f"{task} {backend:10s} spearman {row[backend]:.2f} ({time.perf_counter() - t0:.0f}s)",
                  file=sys.stderr)
        for backend in encoders:
            if backend != "torch":
                row[f"delta_{backend}"] = round(row[backend] - row["torch"], 3)
        out[task] = row
    return out


# -- main ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(benchlib.shared_path("models", "m3e-small")))
    ap.add_argument("--n", type=int, default=20000, help="sentences timed per side per round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median reported)")
    ap.add_argument("--chunk", type=int, default=1000,
                    help="sentences per interleaving step (every side encodes each chunk in turn)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    ap.add_argument("--lcqmc-pairs", type=int, default=None, help="first N LCQMC test pairs (default: all)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="result file (default scripts/benchmarks/encode.json)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime
    import sentence_transformers
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    texts = speed_texts(args.n, args.seed)
    print(f"{len(texts)} sentences, batch {args.batch_size}, max_length {args.max_length}, "
          f"{threads} threads, {args.rounds} rounds", file=sys.stderr)
    sides, encoders = make_sides(args.model, args)

    # the sides must agree before their speeds are compared
    probe = texts[:64]
    ref = sides["sentence-transformers"](probe)
    agreement = {s: round(float((sides[s](probe) * ref).sum(1).min()), 6) for s in SIDES[1:]}

    speed = bench_speed(sides, texts, args.rounds, args.chunk)
    quality = None if args.skip_quality else bench_quality(encoders, args.lcqmc_pairs)

    best_fast = max(("embedkit-onnx", "embedkit-onnx-int8"),
                    key=lambda s: speed[s]["ratio_vs_sentence_transformers"])
    targets = {"default_path_parity": {"target": ">= 1.0",
                                       "measured": speed["embedkit-torch"]["ratio_vs_sentence_transformers"]}}
    for side in ("embedkit-onnx", "embedkit-onnx-int8"):
        be = BACKEND_OF[side]
        t = {"speed_target": f">= {TARGET_RATIO}x", "speed_measured": speed[side]["ratio_vs_sentence_transformers"],
             "speed_met": speed[side]["ratio_vs_sentence_transformers"] >= TARGET_RATIO}
        if quality:
            worst = min(quality[task][f"delta_{be}"] for task in quality)
            t.update({"spearman_target": f"within {TARGET_SPEARMAN_DELTA} points",
                      "spearman_worst_delta": worst,
                      "spearman_met": abs(worst) <= TARGET_SPEARMAN_DELTA and
                      all(abs(quality[task][f"delta_{be}"]) <= TARGET_SPEARMAN_DELTA for task in quality)})
        targets[side] = t
    targets["default_path_parity"]["met"] = targets["default_path_parity"]["measured"] >= 1.0

    result = {
        "benchmark": "encode",
        "date": benchlib.now_utc(),
        "machine": benchlib.machine_info(torch=torch, onnxruntime=onnxruntime,
                                         sentence_transformers=sentence_transformers),
        "config": {"model": Path(args.model).name, "sentences": len(texts), "rounds": args.rounds,
                   "interleave_chunk": args.chunk, "batch_size": args.batch_size, "max_length": args.max_length, "threads": threads,
                   "texts": "distinct sentences of the LCQMC, BQ, ATEC and STS-B test splits, shuffled (seed "
                            f"{args.seed})",
                   "lcqmc_pairs": "all" if args.lcqmc_pairs is None else args.lcqmc_pairs,
                   "stsb_pairs": "all",
                   "command": "python scripts/bench_encode.py " + " ".join(argv if argv is not None else sys.argv[1:])},
        "min_cosine_vs_sentence_transformers": agreement,
        "speed": speed,
        "quality_spearman_x100": quality,
        "best_fast_path": best_fast,
        "targets": targets,
    }
    benchlib.write_result("encode", result, args.out)

    print(f"\n{'side':24s} {'sent/s':>9s} {'ratio vs ST':>12s}")
    for side in SIDES:
        print(f"{side:24s} {speed[side]['sentences_per_s']:9.1f} {speed[side]['ratio_vs_sentence_transformers']:11.2f}x")
    if quality:
        print(f"\n{'Spearman x100':14s} {'pairs':>6s} {'torch':>7s} {'onnx':>7s} {'d':>6s} {'int8':>7s} {'d':>6s}")
        for task, q in quality.items():
            print(f"{task:14s} {q['pairs']:6d} {q['torch']:7.2f} {q['onnx']:7.2f} {q['delta_onnx']:+6.2f} "
                  f"{q['onnx-int8']:7.2f} {q['delta_onnx-int8']:+6.2f}")
    print()
    for name, t in targets.items():
        print(f"target {name}: {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
