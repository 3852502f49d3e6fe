"""How long the BM25 lexical index takes to (re)build, save and load at 100k and 1M documents.

Documents are real Chinese sentences (the train splits of the STS tasks, tokenised with
embedkit.lexical.tokenize), sampled with replacement up to each size, so the vocabulary and lengths
are realistic.  For each size: tokenising, fit (tokens -> bm25s matrix), refresh (the rebuild that
follows an add or delete: stored tokens -> bm25s matrix), add 1% + refresh, delete 1% + refresh,
save, load, and query p50.  Run serialised:

    flock /tmp/embedkit-bench.lock nice python scripts/bench_lexical.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embedkit.evaluation.data import load_task
from embedkit.fsutil import atomic_write_json
from embedkit.lexical import BM25Index, tokenize_many, tokenizer_name


def _t(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sts-zh"))
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--pool-limit", type=int, default=None, help="Only the first N distinct sentences.")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "benchmarks" / "lexical.json"))
    args = ap.parse_args()
    texts: list[str] = []
    for task in ("LCQMC", "BQ", "ATEC"):
        ps = load_task(args.data, task, ["train"]).get("train")
        if ps is not None:
            texts += ps.unique_sentences()[0]
    texts = list(dict.fromkeys(texts))[:args.pool_limit]
    sample = texts[:20000]
    _, tok_s = _t(tokenize_many, sample)
    pool, pool_s = _t(tokenize_many, texts)
    rng = np.random.default_rng(0)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        pick = rng.integers(0, len(pool), n)
        docs = [pool[i] for i in pick]
        ids = np.arange(n, dtype=np.int64)
        bm, fit_s = _t(BM25Index().fit, ids, docs)
        _, refresh_s = _t(bm.refresh)
        m = max(1, n // 100)
        add_docs = [pool[i] for i in rng.integers(0, len(pool), m)]
        _, add_s = _t(bm.add, np.arange(n, n + m), add_docs)
        _, add_refresh_s = _t(bm.refresh)
        _, del_s = _t(bm.delete, rng.choice(n, m, replace=False))
        _, del_refresh_s = _t(bm.refresh)
        queries = [" ".join(pool[i]) for i in rng.integers(0, len(pool), 200)]
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            bm.search([q], k=10)
            lat.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            _, save_s = _t(bm.save, d)
            disk = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
            bm2, load_s = _t(BM25Index.load, d)
        assert bm2.search(queries[:5], k=10) == bm.search(queries[:5], k=10)
        row = {"n_docs": n, "n_tokens": int(sum(len(x) for x in docs)), "n_words": len(bm.vocab_),
               "fit_s": fit_s, "refresh_s": refresh_s, "add_1pct_s": add_s, "add_refresh_s": add_refresh_s,
               "delete_1pct_s": del_s, "delete_refresh_s": del_refresh_s, "save_s": save_s,
               "load_s": load_s, "disk_bytes": disk, "query_p50_ms": round(float(np.median(lat)) * 1e3, 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {"benchmark": "lexical", "tokenizer": tokenizer_name(),
           "tokenize_sentences_per_s": round(len(sample) / max(tok_s, 1e-9)),
           "source": f"{len(texts)} distinct train sentences (LCQMC, BQ, ATEC), sampled with replacement",
           "pool_tokenize_s": pool_s, "rows": rows,
           "note": "refresh = rebuild of the bm25s matrix from stored tokens (what an add/delete costs "
                   "before the next search); 2-core shared machine, single run"}
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
