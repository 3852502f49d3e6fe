#!/usr/bin/env python
"""Side-by-side load test: ``embedkit serve`` against infinity-emb on the same model and machine, in one run.

Both servers stay up on 127.0.0.1; for every load (clients x sentences per request) the servers take
turns phase by phase, round after round, so machine drift hits both alike. Each phase is a fixed time
of closed-loop clients (each sends its next request when the previous one answers; the lean client of
``scripts/loadgen.py``) calling the OpenAI-shaped ``/v1/embeddings`` with LCQMC sentences. Every round also measures in-process
``Encoder.encode`` throughput (the engine alone, in a subprocess while the servers idle). It reports
req/s, sentences/s, p50/p99, errors, the ratios against the targets, and writes JSON (default
scripts/benchmarks/serve.json; ``scripts/perf_table.py`` renders it into the README).

infinity-emb runs from its own virtual environment, made by this script on first use (torch==2.13.0
first, the CPU wheel, then ``infinity-emb[server,torch]==0.0.78``); it is never an embedkit
dependency. Only 127.0.0.1 is contacted; everything stops by itself.

    flock /tmp/embedkit-bench.lock nice python scripts/bench_serve.py             # ~4 minutes, 2 rounds x 8 s
    python scripts/bench_serve.py --servers embedkit,embedkit-nobatch --loads 16x1 # batching on vs off
    python scripts/bench_serve.py --servers embedkit --embedkit-args=--no-freeze-gc  # one option ('=': it starts with -)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402 - scripts/loadgen.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
INFINITY_VERSION = "0.0.78"
TORCH_VERSION = "2.13.0"
SERVERS = ("embedkit", "embedkit-nobatch", "infinity")
TARGETS = {"rps_16x1_vs_infinity": 2.0, "sentences_4x32_vs_infinity": 1.5, "server_vs_inprocess_4x32": 0.9}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHARED / "models" / "m3e-small"))
    p.add_argument("--data", default=str(SHARED / "data" / "sts-zh" / "LCQMC" / "LCQMC.test.data"),
                   help="LCQMC pairs file; its unique sentences are the request texts.")
    p.add_argument("--loads", default="1x1,16x1,32x1,4x32", help="clients x sentences per request, comma-separated")
    p.add_argument("--servers", default="embedkit,infinity", help=f"any of {', '.join(SERVERS)}")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each phase")
    p.add_argument("--inprocess-batch", type=int, default=32, help="batch size of the in-process measurement")
    p.add_argument("--embedkit-args", default="", help="extra `embedkit serve` options, e.g. '--workers 2'")
    p.add_argument("--infinity-venv", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedkit"
                   / "bench-venvs" / f"infinity-emb-{INFINITY_VERSION}")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (counts as an error)")
    p.add_argument("--out", type=Path, default=ROOT / "scripts" / "benchmarks" / "serve.json")
    a = p.parse_args(argv)
    try:
        a.loads = [tuple(int(x) for x in load.lower().split("x")) for load in a.loads.split(",") if load.strip()]
    except ValueError:
        p.error(f"--loads: expected CLIENTSxSENTENCES,..., got {a.loads!r}")
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    bad = [s for s in a.servers if s not in SERVERS]
    if bad or not a.loads or any(len(x) != 2 or min(x) < 1 for x in a.loads) or a.rounds < 1 or a.duration <= 0:
        p.error(f"bad --servers/--loads/--rounds/--duration ({bad or a.loads})")
    return a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
             INFINITY_ANONYMOUS_USAGE_STATS="0", DO_NOT_TRACK="1")
    e.pop("EMBEDKIT_API_KEY", None)
    return e


def lcqmc_sentences(path: str) -> list[str]:
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            for s in line.rstrip("\n").split("\t")[:2]:
                if s.strip():
                    seen.setdefault(s.strip())
    if not seen:
        raise SystemExit(f"no sentences in {path}")
    return list(seen)


# ------------------------------------------------------------------------------------------------
# servers
# ------------------------------------------------------------------------------------------------
def ensure_infinity(venv: Path) -> Path:
    exe = venv / "bin" / "infinity_emb"
    if exe.exists():
        return exe
    print(f"creating {venv} (torch=={TORCH_VERSION}, then infinity-emb[server,torch]=={INFINITY_VERSION}) ...",
          file=sys.stderr, flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"torch=={TORCH_VERSION}"],
             [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
              f"infinity-emb[server,torch]=={INFINITY_VERSION}"]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"cannot install infinity-emb: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return exe


class ServerProc:
    def __init__(self, name: str, cmd: list[str], log_dir: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"server-{name}.log", "w")  # noqa: SIM115 - open while the server runs
        cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, health: str, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = Path(self.log.name).read_text(errors="replace")[-3000:]
                raise SystemExit(f"server {self.name} exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(self.url + health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"server {self.name} not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_servers(args, tmp: Path) -> dict[str, ServerProc]:
    servers: dict[str, ServerProc] = {}
    index = None
    for name in args.servers:
        if name.startswith("embedkit") and index is None:
            print(f"building the index embedkit serves ({args.model}) ...", file=sys.stderr, flush=True)
            index = tmp / "index"
            subprocess.run([sys.executable, "-m", "embedkit.cli", "-q", "index", "build",
                            str(ROOT / "embedkit" / "data" / "demo_zh.jsonl"), "-o", str(index), "--index", "flat",
                            "--model", args.model], cwd=ROOT, env=child_env(), check=True, stdout=subprocess.DEVNULL)
        if name == "infinity":
            exe = ensure_infinity(args.infinity_venv)
            cmd = [str(exe), "v2", "--model-id", args.model, "--served-model-name", "m3e-small", "--engine", "torch",
                   "--device", "cpu", "--host", "127.0.0.1", "--port", "{port}", "--url-prefix", "/v1",
                   "--log-level", "warning"]
        else:
            cmd = [sys.executable, "-m", "embedkit.cli", "serve", str(index), "--host", "127.0.0.1", "--port", "{port}",
                   "--model-name", "m3e-small", *(["--no-batching"] if name == "embedkit-nobatch" else []),
                   *args.embedkit_args.split()]
        servers[name] = ServerProc(name, cmd, tmp)
    for name, s in servers.items():
        s.wait("/health" if name.startswith("embedkit") else "/v1/models")
    return servers


# ------------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------------
async def closed_loop(url: str, clients: int, per_request: int, seconds: float, texts: list[str],
                      timeout: float, seed: int) -> dict:
    """``clients`` closed-loop clients, each POSTing ``per_request`` random sentences to /v1/embeddings
    (the lean client of scripts/loadgen.py); a success is a 200 with one embedding per sentence."""
    return await loadgen.closed_loop(
        url, clients, seconds, lambda rng: {"input": rng.sample(texts, per_request), "model": "m3e-small"},
        lambda body: len(orjson.loads(body)["data"]) == per_request, timeout=timeout, seed=seed)


def summarise(phases: list[dict], per_request: int) -> dict:
    lat = sorted(x for p in phases for x in p["latencies"])
    secs = sum(p["seconds"] for p in phases)
    errors: dict[str, int] = {}
    for p in phases:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v

    def q(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    rps = len(lat) / secs if secs else 0.0
    return {"requests": len(lat), "seconds": round(secs, 2), "rps": round(rps, 2),
            "sentences_per_s": round(rps * per_request, 1), "p50_ms": q(0.50), "p99_ms": q(0.99),
            "errors": sum(errors.values()), "error_kinds": errors,
            "per_round_rps": [round(len(p["latencies"]) / p["seconds"], 2) for p in phases]}


INPROCESS = r"""
import json, sys, time
from embedkit.encoder import Encoder
texts, batch, seconds = json.loads(sys.stdin.read()), int(sys.argv[2]), float(sys.argv[3])
enc = Encoder(sys.argv[1], backend=sys.argv[4])  # the runtime the server under test runs
enc.encode(texts[:batch], batch_size=batch, show_progress_bar=False)
n, i, t0 = 0, 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    chunk = texts[i:i + batch] if i + batch <= len(texts) else texts[:batch]
    i = (i + batch) % max(1, len(texts) - batch)
    enc.encode(chunk, batch_size=batch, show_progress_bar=False)
    n += len(chunk)
print(json.dumps({"sentences": n, "seconds": time.perf_counter() - t0}))
"""


def server_runtime(args) -> str:
    """The encoding runtime ``--embedkit-args`` gives the server (``--backend X``; default: serve's own)."""
    import shlex

    words = shlex.split(args.embedkit_args or "")
    for i, w in enumerate(words):
        if w == "--backend" and i + 1 < len(words):
            return words[i + 1]
        if w.startswith("--backend="):
            return w.split("=", 1)[1]
    from embedkit.constants import SERVE_DEFAULT_RUNTIME

    return SERVE_DEFAULT_RUNTIME


def inprocess(args, texts: list[str]) -> dict:
    sample = random.Random(0).sample(texts, min(len(texts), 4096))
    r = subprocess.run([sys.executable, "-c", INPROCESS, args.model, str(args.inprocess_batch), str(args.duration),
                        server_runtime(args)],
                       input=json.dumps(sample), cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"in-process measurement failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}


def ratios_and_targets(results: dict, inproc_sps: float) -> dict:
    out: dict = {}
    e, i = results.get("embedkit", {}), results.get("infinity", {})

    def div(a, b):
        return round(a / b, 2) if a and b else None

    for load in sorted(set(e) & set(i)):
        out[load] = {"rps_vs_infinity": div(e[load]["rps"], i[load]["rps"]),
                     "sentences_vs_infinity": div(e[load]["sentences_per_s"], i[load]["sentences_per_s"]),
                     "p99_embedkit_ms": e[load]["p99_ms"], "p99_infinity_ms": i[load]["p99_ms"]}
    targets = {}
    if "16x1" in out:
        r = out["16x1"]
        targets["rps_16x1_vs_infinity"] = {
            "target": f">= {TARGETS['rps_16x1_vs_infinity']}x and p99 <= infinity's", "value": r["rps_vs_infinity"],
            "met": bool(r["rps_vs_infinity"] and r["rps_vs_infinity"] >= TARGETS["rps_16x1_vs_infinity"]
                        and r["p99_embedkit_ms"] <= r["p99_infinity_ms"])}
    if "4x32" in out:
        v = out["4x32"]["sentences_vs_infinity"]
        targets["sentences_4x32_vs_infinity"] = {"target": f">= {TARGETS['sentences_4x32_vs_infinity']}x",
                                                 "value": v, "met": bool(v and v >= 1.5)}
    if "4x32" in e and inproc_sps:
        v = div(e["4x32"]["sentences_per_s"], inproc_sps)
        targets["server_vs_inprocess_4x32"] = {"target": f">= {TARGETS['server_vs_inprocess_4x32']}", "value": v,
                                               "met": bool(v and v >= TARGETS["server_vs_inprocess_4x32"])}
    return {"ratios": out, "targets": targets}


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = lcqmc_sentences(args.data)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    phases: dict[str, dict[str, list[dict]]] = {s: {} for s in args.servers}
    inproc: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="embedkit-bench-serve-") as tmp:
        servers = start_servers(args, Path(tmp))
        try:
            for rnd in range(args.rounds):
                for clients, per in args.loads:
                    load = f"{clients}x{per}"
                    for name, srv in servers.items():  # alternate servers phase by phase
                        if args.warmup > 0:
                            asyncio.run(closed_loop(srv.url, clients, per, args.warmup, texts, args.timeout, rnd))
                        ph = asyncio.run(closed_loop(srv.url, clients, per, args.duration, texts, args.timeout,
                                                     rnd + 1))
                        phases[name].setdefault(load, []).append(ph)
                        n = len(ph["latencies"])
                        print(f"round {rnd + 1} {load:<6} {name:<17} {n / ph['seconds']:7.1f} req/s "
                              f"{n * per / ph['seconds']:7.1f} sent/s  errors {sum(ph['errors'].values())}",
                              file=sys.stderr, flush=True)
                ip = inprocess(args, texts)
                inproc.append(ip)
                print(f"round {rnd + 1} in-process Encoder.encode  {ip['sentences'] / ip['seconds']:7.1f} sent/s",
                      file=sys.stderr, flush=True)
            versions, runtimes = {}, {}
            for name, srv in servers.items():
                if name.startswith("embedkit"):
                    info = httpx.get(srv.url + "/info", timeout=10).json()
                    versions[name], runtimes[name] = info["embedkit_version"], info["backend"]
        finally:
            for s in servers.values():
                s.stop()
    results = {name: {load: summarise(ph, int(load.split("x")[1])) for load, ph in by.items()}
               for name, by in phases.items()}
    inproc_sps = round(sum(x["sentences"] for x in inproc) / sum(x["seconds"] for x in inproc), 1)
    report = {
        "benchmark": "serve", "date": started.isoformat(timespec="seconds"), "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": "python scripts/bench_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                   "loads": [f"{c}x{p}" for c, p in args.loads], "servers": args.servers,
                   "endpoint": "/v1/embeddings", "encoding_format": "float", "model": args.model,
                   "texts": f"{Path(args.data).name} unique sentences ({len(texts)})",
                   "infinity": f"infinity-emb[server,torch]=={INFINITY_VERSION}, torch=={TORCH_VERSION}, "
                               "engine torch, device cpu, default batch size 32",
                   "embedkit_args": args.embedkit_args, "versions": versions, "embedkit_runtime": runtimes,
                   "inprocess_batch": args.inprocess_batch,
                   "client": "scripts/loadgen.py (one keep-alive asyncio connection per client, no client library)",
                   "note": "short phases on a 2-core machine that the load generator shares, so every figure "
                           "carries noise; servers alternate phase by phase so drift hits both"},
        "inprocess": {"sentences_per_s": inproc_sps, "runtime": server_runtime(args),
                      "per_round": [round(x["sentences"] / x["seconds"], 1) for x in inproc]},
        "results": results, **ratios_and_targets(results, inproc_sps),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for name, by in results.items():
        for load, r in by.items():
            print(f"{name:<17} {load:<6} {r['rps']:8.1f} req/s {r['sentences_per_s']:8.1f} sent/s  "
                  f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}")
    print(f"in-process Encoder.encode: {inproc_sps} sentences/s")
    print(json.dumps({"ratios": report["ratios"], "targets": report["targets"]}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
