"""The write operations the fault-injection tests interrupt, each with the index it starts from and the
state it must end in. Shared by ``tests/test_index_fault_injection.py``, ``tests/procs/fault_writer.py``
(the SIGKILL variant) and ``scripts/fault_matrix.py``.

A state is ``(contents, has_lexical, calibrated)``: ``contents`` maps id -> (text, metadata) of every
live document as read from a fresh :meth:`EmbedIndex.load`; ``None`` when the directory holds no
complete index."""

from __future__ import annotations

import shutil
from pathlib import Path

from embedkit.corpus import Doc
from embedkit.errors import IndexFormatError
from embedkit.index import EmbedIndex

from ._index_oracle import DIM, WORDS, index_contents
from .conftest import FakeEncoder


def docs(prefix: str, n: int, start: int = 0) -> list[Doc]:
    return [Doc(f"{prefix}{i:02d}", f"{WORDS[i % len(WORDS)]} {WORDS[(i * 5) % len(WORDS)]} {prefix} {i}",
                {"g": i % 3}) for i in range(start, start + n)]


def make_template(root: Path, name: str, *, lexical: bool) -> Path:
    """A flat index with a base, pending segments (adds and deletes) and, optionally, the lexical part."""
    d = root / name
    idx = EmbedIndex.build(d, docs("b", 30), encoder=FakeEncoder(DIM), index="flat", lexical=lexical)
    idx.auto_compact = False
    idx.add(docs("s", 3))
    idx.delete(["b05", "s01"])
    return d


def write_pairs(path: Path) -> Path:
    rows = [f"{a}\t{a}\t1" for a in WORDS] + [f"{a}\t{b}\t0" for a, b in zip(WORDS, WORDS[1:] + WORDS[:1])]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def state(d: Path, *, check: bool = False, pending: bool = False):
    """The committed state of ``d`` (with ``check``: and the problems ``index check`` finds; with ``pending``:
    and whether delta segments are pending, which only a compaction changes)."""
    try:
        idx = EmbedIndex.load(d, encoder=FakeEncoder(DIM))
    except IndexFormatError:
        return (None, []) if check else None
    s = (index_contents(idx), idx.store.lexical is not None, idx.manifest.get("calibration") is not None)
    s = s + (bool(idx.store.segments),) if pending else s
    return (s, idx.check()) if check else s


def load(d: Path, auto_compact: bool = False):
    if not (d / "CURRENT").exists():
        return None
    idx = EmbedIndex.load(d, encoder=FakeEncoder(DIM))
    idx.auto_compact = auto_compact
    return idx


class Op:
    """One write: ``run(idx, d)`` does it; ``expect(before)`` is the state it commits."""

    template = "plain"
    auto_compact = False
    pending = False        # the state includes whether segments are pending (what a compaction changes)
    target = "."           # the directory written, relative to the copied template

    def run(self, idx, d: Path, pairs: Path):
        raise NotImplementedError

    def expect(self, before):
        raise NotImplementedError


class Build(Op):
    """A rebuild (--overwrite) over an existing index."""

    def run(self, idx, d, pairs):
        EmbedIndex.build(d, docs("n", 12), encoder=FakeEncoder(DIM), index="flat", overwrite=True, lexical=True)

    def expect(self, before):
        return ({x.id: (x.text, x.metadata) for x in docs("n", 12)}, True, False)


class FirstBuild(Build):
    """A first build into a new directory (a failed one must not block the next build)."""

    target = "new"

    def run(self, idx, d, pairs):
        EmbedIndex.build(d, docs("n", 12), encoder=FakeEncoder(DIM), index="flat", lexical=True)


class Add(Op):
    def run(self, idx, d, pairs):
        idx.add(docs("a", 2))

    def expect(self, before):
        contents, lexical, cal = before
        return (dict(contents, **{x.id: (x.text, x.metadata) for x in docs("a", 2)}), lexical, cal)


class AddCompacting(Add):
    """An add whose automatic compaction follows its commit (a failed compaction must not fail the add)."""

    template = "lexical"
    auto_compact = True


class Delete(Op):
    ids = ("b00", "s00")

    def run(self, idx, d, pairs):
        idx.delete(list(self.ids))

    def expect(self, before):
        contents, lexical, cal = before
        return ({k: v for k, v in contents.items() if k not in self.ids}, lexical, cal)


class DeleteCompacting(Delete):
    template = "lexical"
    auto_compact = True


class Compact(Op):
    template = "lexical"
    pending = True

    def run(self, idx, d, pairs):
        idx.compact()

    def expect(self, before):
        return before[:3] + (False,)


class Lexical(Op):
    def run(self, idx, d, pairs):
        idx.add_lexical()

    def expect(self, before):
        return (before[0], True, before[2])


class Calibrate(Op):
    def run(self, idx, d, pairs):
        idx.calibrate(pairs)

    def expect(self, before):
        return (before[0], before[1], True)


OPS = {"build": Build(), "build-new": FirstBuild(), "add": Add(), "add+compaction": AddCompacting(),
       "delete": Delete(), "delete+compaction": DeleteCompacting(), "compact": Compact(), "lexical": Lexical(),
       "calibrate": Calibrate()}


def fresh_copy(templates: Path, op: Op, work: Path) -> Path:
    """A copy of the op's template index at ``work``; returns the directory the op writes."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(templates / op.template, work)
    return work / op.target if op.target != "." else work


def leftovers(d: Path) -> list[str]:
    """Files in the index directory that no complete index has (after the next successful write)."""
    if not d.exists():
        return []
    gens = [p.name for p in d.iterdir() if p.name.startswith("gen-")]
    other = [p.name for p in d.iterdir() if not p.name.startswith("gen-") and p.name not in ("CURRENT", "LOCK")]
    return other + (gens[1:] if len(gens) > 1 else [])


def _next_write(d: Path, op: Op, pairs: Path, failed: bool, idx) -> str | None:
    """The write after the fault: the same operation again when it failed (on the same object), else a small
    add; returns an error message or None."""
    try:
        if failed:
            op.run(idx if idx is not None else load(d, op.auto_compact), d, pairs)
        else:
            load(d).add(docs("z", 1))
    except Exception as e:  # noqa: BLE001 - reported
        return f"{type(e).__name__}: {e}"
    return None


_BEFORE: dict = {}   # the state of a template (copied unchanged for every step)


def inject(op_name: str, n: int, templates: Path, work: Path, pairs: Path, setattr_, undo, *,
           sticky: bool = False) -> dict:
    """Run ``op_name`` on a fresh copy of its template with the ``n``-th filesystem step failing (ENOSPC)
    and check the invariants; returns a record (``hit`` None: the op finished before step ``n``)."""
    from ._fs_faults import Faults, install

    op = OPS[op_name]
    d = fresh_copy(templates, op, work)
    key = (str(templates), op_name)
    before = _BEFORE[key] if key in _BEFORE else _BEFORE.setdefault(key, state(d, pending=op.pending))
    idx = load(d, op.auto_compact)
    faults = Faults(d, n, sticky=sticky)
    install(faults, setattr_)
    error = None
    try:
        op.run(idx, d, pairs)
    except Exception as e:  # noqa: BLE001 - judged below
        error = e
    finally:
        undo()
    expected = op.expect(before)
    got, check = state(d, check=True, pending=op.pending)
    rec = {"op": op_name, "n": n, "steps": faults.n, "hit": faults.hit, "names": faults.names,
           "error": None if error is None else f"{type(error).__name__}: {error}",
           "unexpected_error": error is not None and not (isinstance(error, OSError) and "injected" in str(error)),
           "lost": error is None and got != expected,          # reported done, not committed
           "phantom": error is not None and got != before}     # reported failed, committed (in part or whole)
    rec["check"] = check
    if idx is not None and error is not None and got is not None:
        idx.refresh()   # the object that failed still reads the committed state
        rec["object_diverged"] = index_contents(idx) != got[0]
    rec["next_error"] = _next_write(d, op, pairs, error is not None, idx)
    final, rec["check_after"] = state(d, check=True, pending=op.pending)
    rec["next_state_ok"] = final is not None and (final == expected if error is not None else
                                                  final[0].keys() == set(expected[0]) | {"z00"})
    rec["leftovers"] = leftovers(d)
    return rec


def problems(rec: dict) -> list[str]:
    """What a record shows to be wrong (empty: every invariant held)."""
    out = [k for k in ("unexpected_error", "lost", "phantom", "torn", "object_diverged", "next_error", "leftovers")
           if rec.get(k)]
    out += ["check"] if rec["check"] else []
    out += ["check_after"] if rec["check_after"] else []
    out += [] if rec["next_state_ok"] else ["next_state"]
    return out


class KillServer:
    """Client of ``tests/procs/fault_writer.py`` (one process; each write runs in a forked child)."""

    def __init__(self):
        import os
        import subprocess
        import sys

        from .conftest import ROOT

        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "procs" / "fault_writer.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
        assert self._read()["status"] == "ready"

    def _read(self) -> dict:
        import json

        line = self.proc.stdout.readline()
        assert line, f"the fault writer process died (exit {self.proc.poll()})"
        return json.loads(line)

    def run(self, op: str, n: int, d: Path, pairs: Path) -> dict:
        import json

        self.proc.stdin.write(json.dumps({"op": op, "n": n, "dir": str(d), "pairs": str(pairs)}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def kill_at(server: KillServer, op_name: str, n: int, templates: Path, work: Path, pairs: Path) -> dict:
    """A writer process SIGKILLed before the ``n``-th filesystem step of ``op_name``; the invariants after
    it (``killed`` False: the op finished before step ``n``). ``committed``: the directory holds the
    operation's result (it died after the commit point), else it must hold the state before it."""
    op = OPS[op_name]
    d = fresh_copy(templates, op, work)
    key = (str(templates), op_name)
    before = _BEFORE[key] if key in _BEFORE else _BEFORE.setdefault(key, state(d, pending=op.pending))
    answer = server.run(op_name, n, d, pairs)
    expected = op.expect(before)
    got, check = state(d, check=True, pending=op.pending)
    rec = {"op": op_name, "n": n, "killed": answer["status"] == "killed", "answer": answer,
           "committed": got == expected, "torn": got not in (before, expected), "check": check,
           "unexpected_error": answer["status"] == "raised", "lost": False, "phantom": False}
    if answer["status"] == "completed":
        rec["lost"] = got != expected
    rec["next_error"] = _next_write(d, op, pairs, got == before, None)
    final, rec["check_after"] = state(d, check=True, pending=op.pending)
    rec["next_state_ok"] = final is not None and (final == expected if got == before else
                                                  final[0].keys() == set(expected[0]) | {"z00"})
    rec["leftovers"] = leftovers(d)   # the dead writer's temporary directory is gone after the next write
    return rec


def targets(names: list[str], stride: int) -> list[int]:
    """The steps to fail (1-based): every ``stride``-th, and every step that switches a generation."""
    return [n for n, name in enumerate(names, 1)
            if (n - 1) % stride == 0 or "CURRENT" in name or name.startswith("os.rename")]
