"""The SIGKILL variant of the fault-injection test: a writer that kills itself at the N-th filesystem step.

A long-lived process (imports, FAISS and the word segmenter are warmed up once) reads one JSON command
per line, ``{"op", "n", "dir", "pairs"}``, forks a child that loads the index at ``dir``, installs
:mod:`tests._fs_faults` with ``action="kill"`` at step ``n`` and runs the operation of
:data:`tests._fault_ops.OPS`; the child SIGKILLs itself before doing step ``n``. The answer is one JSON
line: ``{"status": "killed" | "completed" | "raised", "steps": ..., "error": ...}``. The parent then
checks the directory. Run with OMP_NUM_THREADS=1 (a forked child must not inherit a thread pool)."""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests._fault_ops import OPS, load, make_template, write_pairs  # noqa: E402
from tests._fs_faults import Faults, Patcher, install  # noqa: E402
from tests._index_oracle import scratch_dir  # noqa: E402


def child(cmd: dict, out: int) -> None:
    op, d = OPS[cmd["op"]], Path(cmd["dir"])
    idx = load(d, op.auto_compact)
    faults = Faults(d, int(cmd["n"]), action="kill")
    install(faults, Patcher())
    try:
        op.run(idx, d, Path(cmd["pairs"]))
        answer = {"status": "completed", "steps": faults.n}
    except Exception as e:  # noqa: BLE001 - reported to the parent
        answer = {"status": "raised", "steps": faults.n, "error": f"{type(e).__name__}: {e}"}
    os.write(out, json.dumps(answer).encode())


def main() -> None:
    warm = Path(scratch_dir("ek-fault-warm-"))
    load(make_template(warm, "w", lexical=True)).calibrate(write_pairs(warm / "pairs.tsv"))  # every lazy import
    print(json.dumps({"status": "ready"}), flush=True)
    try:
        serve()
    finally:
        shutil.rmtree(warm, ignore_errors=True)


def serve() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                child(cmd, w)
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            answer = {"status": "killed"}
        else:
            answer = json.loads(data or b'{"status": "raised", "error": "the child wrote nothing"}')
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
