"""What opening a 1M-document index costs the one-shot commands: `index info`, a one-document
`index add` and a one-query `search`, side by side with the code of a baseline commit in one run.

The index: N synthetic unit vectors (d = 512, seeded), flat, built through
``EmbedIndex.build_from_vectors`` with m3e-small's query path (so `search` and `add` load the real
model, as a user's would). Each command runs as its own process (``python -m embedkit.cli``, one
thread pool as configured); wall time and the peak RSS of that process (``wait4``'s ru_maxrss) are
recorded, best of ``--repeats``. The baseline runs the same commands from a checkout of ``--baseline``
(``git worktree``; its package imported ahead of the installed one), on the same index.

    python scripts/bench_open.py [--n 1000000] [--baseline fb9b057] [--repeats 2]

Writes scripts/benchmarks/open.json. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import SHARED, machine_info, now_utc, write_result  # noqa: E402

import numpy as np  # noqa: E402

DIM = 512
CHUNK = 50_000
TARGETS = {"info_s": 0.5, "add_s": 4.0, "search_s": 4.0, "rss_vs_files": 1.2}


def build(directory: Path, n: int) -> None:
    from embedkit.corpus import Doc
    from embedkit.index import EmbedIndex
    from embedkit.querypath import QueryPath
    from embedkit.reducers import make_reducer

    model = str(SHARED / "models" / "m3e-small")
    qp = QueryPath(None, make_reducer("none"), "cosine",
                   encoder_config={"model": model, "pooling": "model", "max_length": 64, "dim": DIM})

    def batches():
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            x = np.random.default_rng(s).standard_normal((m, DIM)).astype(np.float32)
            yield [Doc(f"d{i}", f"文档 {i}", {"shard": i % 7}) for i in range(s, s + m)], \
                x / np.linalg.norm(x, axis=1, keepdims=True)

    EmbedIndex.build_from_vectors(directory, batches(), query_path=qp, index="flat", expected_size=n)


def files_bytes(directory: Path) -> int:
    gen = directory / (directory / "CURRENT").read_text().strip()
    return sum(p.stat().st_size for p in gen.rglob("*") if p.is_file())


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one process running ``cmd``; raises if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode or "Traceback" in text:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {text[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def best_of(cmds, env: dict) -> dict:
    best = None
    for cmd in cmds:
        seconds, rss = timed(cmd, env)
        if best is None or seconds < best["seconds"]:
            best = {"seconds": round(seconds, 3), "peak_rss_mib": round(rss, 1)}
    return best


#: runs embedkit's CLI from the checkout named by the first argument (not from the editable install,
#: whose import finder would otherwise win over sys.path)
FROM_CHECKOUT = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
                 "str(getattr(f, '__module__', ''))]; sys.path.insert(0, sys.argv.pop(1)); "
                 "from embedkit.cli import main; sys.argv[0] = 'embedkit'; main()")


def measure(label: str, directory: Path, env: dict, repeats: int, tag: str, checkout: Path | None = None) -> dict:
    py = [sys.executable, "-m", "embedkit.cli"] if checkout is None else [sys.executable, "-c", FROM_CHECKOUT,
                                                                          str(checkout)]
    rows = {}

    def adds():
        for r in range(repeats):
            one = directory.parent / f"one-{tag}-{r}.jsonl"
            doc_id = f"one-{tag}-{time.time_ns()}"  # new in every run, on an index kept between runs
            one.write_text(json.dumps({"id": doc_id, "text": "新加的一篇文档"}, ensure_ascii=False) + "\n")
            yield [*py, "index", "add", str(directory), str(one)]

    plans = {"info": [[*py, "index", "info", str(directory)]] * repeats,
             "search": [[*py, "search", str(directory), "信用卡额度怎么提高", "-k", "10", "--json"]] * repeats,
             "add": adds()}
    for name, cmds in plans.items():
        rows[name] = best = best_of(cmds, env)
        print(f"{label:>9} {name:<6} {best['seconds']:7.2f} s  peak RSS {best['peak_rss_mib']:8.1f} MiB", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--baseline", default="fb9b057", help="commit to compare with ('' to skip)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="where the index is built (default: a temp dir)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ek-open-"))
    work.mkdir(parents=True, exist_ok=True)
    directory = work / f"flat-{args.n}"
    if not (directory / "CURRENT").exists():
        t0 = time.perf_counter()
        build(directory, args.n)
        print(f"built {args.n:,} documents in {time.perf_counter() - t0:.1f} s", flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    size = files_bytes(directory)
    result = {"benchmark": "open", "machine": machine_info(), "date": now_utc(), "command": "python scripts/bench_open.py " + " ".join(argv or sys.argv[1:]),
              "n": args.n, "dim": DIM, "index": "flat", "files_bytes": size, "targets": TARGETS, "runs": {}}
    result["repeats"] = args.repeats
    model = str(SHARED / "models" / "m3e-small")
    floor = [sys.executable, "-c", f"from embedkit.encoder import Encoder; Encoder({model!r}).encode('信用卡')"]
    result["floor"] = best_of([floor] * args.repeats, env)
    print(f"    floor (load the model, encode one sentence) {result['floor']['seconds']:.2f} s", flush=True)
    result["runs"]["this"] = measure("this", directory, env, args.repeats, "this")
    if args.baseline:
        base = work / "baseline"
        if not base.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
        try:
            result["runs"]["baseline"] = measure("baseline", directory, env, args.repeats, "base", checkout=base)
            result["baseline"] = args.baseline
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    this = result["runs"]["this"]
    mib = size / 2**20
    result["met"] = {"info": this["info"]["seconds"] <= TARGETS["info_s"],
                     "add": this["add"]["seconds"] <= TARGETS["add_s"],
                     "search": this["search"]["seconds"] <= TARGETS["search_s"],
                     "rss": max(this["add"]["peak_rss_mib"], this["search"]["peak_rss_mib"]) <= TARGETS["rss_vs_files"] * mib}
    result["rss_vs_files"] = {k: round(this[k]["peak_rss_mib"] / mib, 3) for k in ("add", "search")}
    if "baseline" in result["runs"]:
        b = result["runs"]["baseline"]
        result["speedup_vs_baseline"] = {k: round(b[k]["seconds"] / this[k]["seconds"], 2) for k in this}
    print(json.dumps({k: result[k] for k in ("met", "rss_vs_files")}, indent=1))
    path = write_result("open", result, args.out)
    print(f"wrote {path}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
