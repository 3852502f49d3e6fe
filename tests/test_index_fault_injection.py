"""Fault injection on every write of the index (issue 19, item 3).

For each write (build, first build, add, delete — alone and followed by an automatic compaction —,
compact, the lexical part, calibrate), the N-th filesystem step of the commit fails, for N = 1, 2, ...
until the operation finishes without reaching the fault (see :mod:`tests._fs_faults` for the steps: a
patch installed by the test, nothing in the production code). After each:

* the operation raised the injected error, or reported success (a fault after the commit point, e.g. in
  the automatic compaction after an add, must not report the committed add as failed);
* a write reported as failed was not committed (no phantom), a write reported as done was (no loss):
  a fresh ``EmbedIndex.load`` equals the model of the last successful commit exactly;
* ``index check`` is clean, the object that failed still reads the committed state, the next write
  (the same operation again) succeeds, and it leaves no stray files behind.

Three variants: the fault happens once (``ENOSPC`` from one call), the disk stays full (every later write
step fails too), and a real writer process SIGKILLed before the N-th step (``tests/procs/fault_writer.py``).
Small writes fail at every step; large ones at every ``EMBEDKIT_FAULT_STRIDE``-th step plus every step
that switches a generation (``EMBEDKIT_FAULT_STRIDE=1`` or ``scripts/fault_matrix.py``: every step).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ._fault_ops import KillServer, inject, kill_at, make_template, problems, targets, write_pairs
from ._index_oracle import scratch_dir

STRIDE = int(os.environ.get("EMBEDKIT_FAULT_STRIDE", "5"))
SMALL = ("add", "delete", "calibrate")
LARGE = ("build", "build-new", "add+compaction", "delete+compaction", "compact", "lexical")


@pytest.fixture(scope="module")
def env():
    root = Path(scratch_dir("ek-faults-"))
    templates = root / "templates"
    templates.mkdir()
    make_template(templates, "plain", lexical=False)
    make_template(templates, "lexical", lexical=True)
    yield templates, root / "work", write_pairs(root / "pairs.tsv")
    shutil.rmtree(root, ignore_errors=True)


def _dry_run(op, env, monkeypatch) -> list[str]:
    templates, work, pairs = env
    rec = inject(op, 10**9, templates, work, pairs, monkeypatch.setattr, monkeypatch.undo)
    assert rec["hit"] is None and not problems(rec), rec
    assert rec["steps"] > 10, rec["names"]   # the patch layer sees the commit's steps
    return rec["names"]


def _check(rec) -> None:
    bad = problems(rec)
    assert not bad, (f"{rec['op']}: fault at step {rec['n']} ({rec['hit']}) broke {bad}: error={rec['error']!r} "
                     f"next={rec.get('next_error')!r} check={rec['check']} leftovers={rec['leftovers']}")


def _run(op, env, monkeypatch, stride, sticky=False) -> int:
    templates, work, pairs = env
    names = _dry_run(op, env, monkeypatch)
    for n in targets(names, stride):
        rec = inject(op, n, templates, work, pairs, monkeypatch.setattr, monkeypatch.undo, sticky=sticky)
        assert rec["hit"] is not None and rec["hit"][0] == n, rec
        _check(rec)
    return len(names)


@pytest.mark.parametrize("op", SMALL)
def test_each_step_of_a_small_write_fails_cleanly(op, env, monkeypatch):
    _run(op, env, monkeypatch, 1)


@pytest.mark.parametrize("op", LARGE)
def test_failing_steps_of_a_large_write_fail_cleanly(op, env, monkeypatch):
    _run(op, env, monkeypatch, STRIDE)


@pytest.mark.parametrize("op", SMALL + LARGE)
def test_a_disk_that_stays_full(op, env, monkeypatch):
    _run(op, env, monkeypatch, 1 if op in SMALL else 2 * STRIDE, sticky=True)


def test_a_failed_compaction_after_an_add_reports_the_add_as_done(env, monkeypatch):
    """Issue 19 defect 3: the add's commit is followed by an automatic compaction; a fault there must
    leave the add reported as done (and committed), not raise."""
    templates, work, pairs = env
    names = _dry_run("add+compaction", env, monkeypatch)
    first_commit = next(n for n, name in enumerate(names, 1) if name == "os.replace CURRENT")
    assert first_commit < len(names) - 10   # a compaction follows the add's commit
    rec = inject("add+compaction", first_commit + 3, templates, work, pairs, monkeypatch.setattr, monkeypatch.undo)
    assert rec["hit"] is not None and rec["error"] is None, rec
    _check(rec)


@pytest.fixture(scope="module")
def kill_server():
    server = KillServer()
    yield server
    server.close()


@pytest.mark.parametrize("op", SMALL + LARGE)
def test_a_writer_killed_at_each_step(op, env, kill_server, monkeypatch):
    """A writer process SIGKILLed before step N: the directory holds the state before the write or after
    it (never a mix), check is clean, the next writer commits and removes what the dead one left."""
    templates, work, pairs = env
    names = _dry_run(op, env, monkeypatch)
    committed = []
    for n in targets(names, 1 if op in ("add", "delete") else 2 * STRIDE):
        rec = kill_at(kill_server, op, n, templates, work, pairs)
        assert rec["killed"], rec
        _check(dict(rec, hit=("SIGKILL", n), error=None))
        committed.append(rec["committed"])
    assert committed and not committed[0]
    assert all(b for a, b in zip(committed, committed[1:]) if a), f"{op}: committed, then not: {committed}"
    rec = kill_at(kill_server, op, len(names) + 1, templates, work, pairs)   # never reaches the kill
    assert not rec["killed"] and rec["committed"] and not problems(rec), rec


def test_a_dead_writers_temporary_current_is_removed_by_the_next_write(tmp_path):
    """Regression (found by the SIGKILL variant): a writer killed while switching CURRENT left its
    ``.CURRENT.<random>.tmp`` in the index directory for ever; the next writer (holding the lock) removes it."""
    from embedkit.index import EmbedIndex

    from ._fault_ops import docs, leftovers
    from ._index_oracle import DIM
    from .conftest import FakeEncoder

    d = tmp_path / "i"
    idx = EmbedIndex.build(d, docs("b", 5), encoder=FakeEncoder(DIM))
    (d / ".CURRENT.k1ll3d.tmp").write_bytes(b"gen-000")
    idx.add(docs("a", 1))
    assert leftovers(d) == [] and len(EmbedIndex.load(d, encoder=FakeEncoder(DIM))) == 6


def test_a_first_build_killed_while_switching_current_does_not_block_the_next_build(tmp_path):
    """Regression (found by the SIGKILL variant): a first build killed before CURRENT existed left
    ``.CURRENT.<random>.tmp``, and every later build refused the directory as "not an embedkit index"."""
    from embedkit.index import EmbedIndex

    from ._fault_ops import docs, leftovers
    from ._index_oracle import DIM
    from .conftest import FakeEncoder

    d = tmp_path / "new"
    d.mkdir()
    (d / "gen-00000001").mkdir()
    (d / ".CURRENT.k1ll3d.tmp").write_bytes(b"")
    EmbedIndex.build(d, docs("n", 4), encoder=FakeEncoder(DIM))
    assert leftovers(d) == [] and len(EmbedIndex.load(d, encoder=FakeEncoder(DIM))) == 4
