"""Re-embed a live index while `embedkit serve` serves it: failed requests, lost writes, switch time.

An index of N short Chinese documents (distinct LCQMC train sentences) is built with the OLD model;
`embedkit serve --backend torch` serves it; client threads send searches and, every few requests, a
one-document add (closed loop) while `embedkit index reembed DIR --model NEW` runs in another process.
Afterwards: every request's status, every added id looked up in the re-embedded index, `/info`'s model,
and the re-embed's summary (how long it held the writer lock: the switch).

    python scripts/bench_reembed.py [--n 100000] [--old tiny-random-bert-zh] [--new m3e-small]

Writes scripts/benchmarks/reembed.json. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import SHARED, machine_info, now_utc, percentile, write_result  # noqa: E402

TARGETS = {"failed_requests": 0, "lost_writes": 0, "switch_s": 1.0}


def sentences(n: int) -> list[str]:
    seen: dict[str, None] = {}
    with open(SHARED / "data" / "sts-zh" / "LCQMC" / "LCQMC.train.data", encoding="utf-8") as f:
        for line in f:
            for s in line.rstrip("\n").split("\t")[:2]:
                if s.strip():
                    seen.setdefault(s.strip(), None)
            if len(seen) >= n:
                break
    return list(seen)[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--old", default="tiny-random-bert-zh")
    ap.add_argument("--new", default="m3e-small")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--add-every", type=int, default=5, help="one add per this many requests of a client")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import httpx
    from tests._api_util import Server, serve_env

    from embedkit.corpus import Doc
    from embedkit.encoder import Encoder
    from embedkit.index import EmbedIndex

    old, new = str(SHARED / "models" / args.old), str(SHARED / "models" / args.new)
    work = Path(tempfile.mkdtemp(prefix="ek-reembed-"))
    d = work / "idx"
    texts = sentences(args.n)
    t0 = time.perf_counter()
    EmbedIndex.build(d, [Doc(f"s{i}", t) for i, t in enumerate(texts)], encoder=Encoder(old), index="flat")
    print(f"built {len(texts):,} documents with {args.old} in {time.perf_counter() - t0:.1f} s", flush=True)
    srv = Server(d, work / "server.log", "--backend", "torch").wait_ready()
    lat, failures, added, stop = [], [], [], threading.Event()
    queries = texts[::max(1, len(texts) // 200)][:200]

    def client(c_id: int):
        i = 0
        with httpx.Client(base_url=srv.url, timeout=300) as c:
            while not stop.is_set():
                t = time.perf_counter()
                if i % args.add_every == args.add_every - 1:
                    doc_id = f"live-{c_id}-{i}"
                    r = c.post("/documents", json={"documents": [{"id": doc_id, "text": f"切换期间写入的文档 {c_id} {i}"}]})
                    ok = r.status_code == 201
                    if ok:
                        added.append(doc_id)
                else:
                    r = c.post("/search", json={"query": queries[i % len(queries)], "top_k": 5})
                    ok = r.status_code == 200
                lat.append((time.perf_counter(), (time.perf_counter() - t) * 1000))
                if not ok:
                    failures.append({"status": r.status_code, "body": r.text[:300]})
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        t_re = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "embedkit.cli", "index", "reembed", str(d), "--model", new],
                           cwd=ROOT, env=serve_env(), capture_output=True, text=True, check=False)
        reembed_s = time.perf_counter() - t_re
        if r.returncode:
            raise SystemExit(f"reembed failed:\n{r.stderr[-3000:]}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        time.sleep(5)  # traffic after the switch: the server follows it
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    with httpx.Client(base_url=srv.url, timeout=300) as c:
        info = c.get("/info").json()
    srv.stop()
    live = EmbedIndex.load(d)
    lost = [i for i in added if live.get(i) is None]
    during = [ms for ts, ms in lat if t_re <= ts <= t_re + reembed_s]
    result = {
        "benchmark": "reembed", "machine": machine_info(), "date": now_utc(),
        "command": "python scripts/bench_reembed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n": len(texts), "old_model": args.old, "new_model": args.new, "clients": args.clients,
        "requests": len(lat), "requests_during_reembed": len(during), "failed_requests": len(failures),
        "failures": failures[:5], "adds": len(added), "lost_writes": len(lost), "reembed_s": round(reembed_s, 1),
        "switch_s": summary["lock_held_seconds"], "writes_caught_up": summary["writes_caught_up"],
        "latency_ms_during": {"p50": round(percentile(during, 50), 1), "p99": round(percentile(during, 99), 1),
                              "max": round(max(during), 1)} if during else None,
        "server_model_after": info["model"], "documents_after": len(live), "targets": TARGETS,
    }
    result["met"] = {"failed_requests": result["failed_requests"] == 0, "lost_writes": result["lost_writes"] == 0,
                     "switch_s": result["switch_s"] < TARGETS["switch_s"],
                     "server_follows": info["model"] == new}
    print(json.dumps({k: result[k] for k in ("requests", "failed_requests", "adds", "lost_writes", "reembed_s",
                                             "switch_s", "latency_ms_during", "met")}, indent=1))
    write_result("reembed", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
