#!/usr/bin/env python
"""Load test of ``embedkit serve``: /search and /v1/embeddings at 1, 8 and 32 concurrent clients,
micro-batching on versus off, on the same index, in one run.

It builds (or takes) an index, starts one server per mode on 127.0.0.1 (both stay up; phases alternate
between them so machine drift hits both modes alike), and for every endpoint x concurrency x mode runs
closed-loop clients (each sends its next request when the previous one answers) for a fixed time.
Every request carries one short Chinese query: the many-small-requests case micro-batching is for.
It reports requests/s, p50/p99 latency, errors and the mean encoder batch (from /metrics), prints the
on/off ratios and writes JSON (default scripts/benchmarks/serve.json). It stops by itself and only
talks to 127.0.0.1.

    flock /tmp/embedkit-heavy.lock python scripts/bench_serve.py              # ~6 minutes
    python scripts/bench_serve.py --duration 5 --clients 1,8 --warmup 1       # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "embedkit" / "data"
ENDPOINTS = {"search": "/search", "embeddings": "/v1/embeddings"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, help="Serve this index (default: build the demo corpus into a temp dir).")
    p.add_argument("--model", default=str(ROOT.parent / "shared" / "models" / "m3e-small"),
                   help="Model for the index built when --index is not given.")
    p.add_argument("--duration", type=float, default=25.0, help="Seconds measured per phase.")
    p.add_argument("--warmup", type=float, default=2.0, help="Unmeasured seconds before each phase.")
    p.add_argument("--clients", default="1,8,32", help="Comma-separated concurrency levels.")
    p.add_argument("--endpoints", default="search,embeddings", help="Any of: search, embeddings.")
    p.add_argument("--modes", default="on,off", help="Micro-batching modes: on, off.")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=30.0, help="Per-request timeout (counts as an error).")
    p.add_argument("--out", type=Path, default=ROOT / "scripts" / "benchmarks" / "serve.json")
    a = p.parse_args(argv)
    a.clients = [int(c) for c in a.clients.split(",") if c.strip()]
    a.endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [e for e in a.endpoints if e not in ENDPOINTS] + [m for m in a.modes if m not in ("on", "off")]
    if bad or not a.clients or min(a.clients) < 1 or a.duration <= 0 or a.duration > 600:
        p.error(f"bad --endpoints/--modes/--clients/--duration ({bad or a.clients or a.duration})")
    return a


# ------------------------------------------------------------------------------------------------
# servers
# ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    e.pop("EMBEDKIT_API_KEY", None)
    return e


def build_index(model: str, out: Path) -> Path:
    cmd = [sys.executable, "-m", "embedkit.cli", "-q", "index", "build", str(DATA / "demo_zh.jsonl"), "-o", str(out),
           "--index", "flat", "--model", model]
    subprocess.run(cmd, cwd=ROOT, env=env(), check=True, stdout=subprocess.DEVNULL)
    return out


class ServerProc:
    def __init__(self, index: Path, mode: str, args, log_dir: Path):
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"server-{mode}.log", "w")
        cmd = [sys.executable, "-m", "embedkit.cli", "serve", str(index), "--host", "127.0.0.1", "--port",
               str(self.port), "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms)]
        if mode == "off":
            cmd.append("--no-batching")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server ({self.mode}) exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"server ({self.mode}) not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def batch_stats(url: str) -> tuple[float, float]:
    """(encoder calls, texts encoded) so far, from /metrics."""
    calls = texts = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("embedkit_batch_size_count "):
            calls = float(line.split()[-1])
        elif line.startswith("embedkit_batch_size_sum "):
            texts = float(line.split()[-1])
    return calls, texts


# ------------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------------
def payload(endpoint: str, text: str, top_k: int) -> dict:
    if endpoint == "search":
        return {"query": text, "top_k": top_k}
    return {"input": text, "model": "m3e-small"}


async def closed_loop(url: str, endpoint: str, clients: int, seconds: float, texts: list[str], top_k: int,
                      timeout: float) -> dict:
    path = ENDPOINTS[endpoint]
    lat: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker(w: int):
            rng = random.Random(w)
            while time.perf_counter() < deadline:
                body = payload(endpoint, rng.choice(texts), top_k)
                s = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok = r.status_code == 200
                    key = str(r.status_code)
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                if ok:
                    lat.append(time.perf_counter() - s)
                else:
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: float("nan"))
    return {"requests": len(lat), "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": round(elapsed, 2), "rps": round(len(lat) / elapsed, 2),
            "p50_ms": round(q(0.50), 2), "p99_ms": round(q(0.99), 2),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None}


def run_phase(server: ServerProc, endpoint: str, clients: int, args, texts: list[str]) -> dict:
    if args.warmup > 0:
        asyncio.run(closed_loop(server.url, endpoint, clients, args.warmup, texts, args.top_k, args.timeout))
    c0, t0 = batch_stats(server.url)
    res = asyncio.run(closed_loop(server.url, endpoint, clients, args.duration, texts, args.top_k, args.timeout))
    c1, t1 = batch_stats(server.url)
    res["mean_batch_texts"] = round((t1 - t0) / (c1 - c0), 2) if c1 > c0 else None
    return {"endpoint": endpoint, "path": ENDPOINTS[endpoint], "batching": server.mode, "clients": clients, **res}


# ------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    return info


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    by = {(r["endpoint"], r["clients"], r["batching"]): r for r in rows}
    for (ep, c, mode), on in sorted(by.items()):
        off = by.get((ep, c, "off"))
        if mode != "on" or off is None:
            continue
        div = lambda a, b: round(a / b, 2) if a and b and a == a and b == b else None  # noqa: E731
        out.append({"endpoint": ep, "clients": c, "rps_on_over_off": div(on["rps"], off["rps"]),
                    "p50_off_over_on": div(off["p50_ms"], on["p50_ms"]),
                    "p99_off_over_on": div(off["p99_ms"], on["p99_ms"])})
    return out


def table(rows: list[dict], rat: list[dict]) -> str:
    lines = [f"{'endpoint':<15}{'clients':>8}{'batching':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
             f"{'batch':>7}"]
    for r in rows:
        lines.append(f"{r['path']:<15}{r['clients']:>8}{r['batching']:>9}{r['rps']:>9.1f}{r['p50_ms']:>9.1f}"
                     f"{r['p99_ms']:>9.1f}{r['errors']:>7}{(r['mean_batch_texts'] or 0):>7.1f}")
    if rat:
        lines.append("")
        lines.append(f"{'endpoint':<15}{'clients':>8}{'req/s on/off':>14}{'p50 off/on':>12}{'p99 off/on':>12}")
        for r in rat:
            lines.append(f"{ENDPOINTS[r['endpoint']]:<15}{r['clients']:>8}{r['rps_on_over_off']!s:>14}"
                         f"{r['p50_off_over_on']!s:>12}{r['p99_off_over_on']!s:>12}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = [q for q in (DATA / "demo_queries.txt").read_text(encoding="utf-8").splitlines() if q.strip()]
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="embedkit-bench-serve-") as tmp:
        tmp = Path(tmp)
        index = args.index
        if index is None:
            print(f"building the demo index with {args.model} ...", file=sys.stderr)
            index = build_index(args.model, tmp / "index")
        servers = {}
        rows: list[dict] = []
        try:
            for mode in args.modes:
                servers[mode] = ServerProc(index, mode, args, tmp)
            for s in servers.values():
                s.wait()
            info = httpx.get(next(iter(servers.values())).url + "/info").json()
            for ep in args.endpoints:
                for c in args.clients:
                    for mode in args.modes:  # alternate modes phase by phase
                        row = run_phase(servers[mode], ep, c, args, texts)
                        rows.append(row)
                        print(f"{row['path']:<15} clients={c:<3} batching={mode:<3} {row['rps']:8.1f} req/s  "
                              f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  "
                              f"mean batch {row['mean_batch_texts']}", file=sys.stderr, flush=True)
        finally:
            for s in servers.values():
                s.stop()
    rat = ratios(rows)
    report = {
        "benchmark": "serve", "date": started.isoformat(timespec="seconds"), "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python scripts/bench_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {"duration_s": args.duration, "warmup_s": args.warmup, "clients": args.clients,
                   "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms, "top_k": args.top_k,
                   "texts_per_request": 1, "model": info.get("model"), "documents": info.get("count"),
                   "index_type": info.get("index_type"), "dim": info.get("dim")},
        "results": rows, "ratios": rat,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(table(rows, rat))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
