"""Small helpers shared by the benchmark scripts: machine description, result files, timing stats.

Kept free of heavy imports so every ``scripts/bench_*.py`` can use it."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "scripts" / "benchmarks"
SHARED = REPO.parent / "shared"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def machine_info(**versions_of) -> dict:
    """CPU model, logical cores, RAM, OS, Python and the given package versions, plus the date."""
    from embedkit.runtimes.hardware import cpu_identity

    info = {
        **cpu_identity(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for name, mod in versions_of.items():
        info[name] = getattr(mod, "__version__", "?")
    return info


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else float("nan")


def write_result(name: str, obj: dict, out: str | os.PathLike | None = None) -> Path:
    """Write ``obj`` as JSON to ``out`` or ``scripts/benchmarks/<name>.json`` (atomically)."""
    from embedkit.fsutil import atomic_write_json

    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)
    print(f"wrote {path}", file=sys.stderr)
    return path


def shared_path(*parts: str) -> Path:
    return SHARED.joinpath(*parts)
