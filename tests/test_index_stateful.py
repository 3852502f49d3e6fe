"""A stateful property test of the index against a plain in-memory model (issue 19, item 2).

Hypothesis drives random sequences of adds (new and re-added ids, with metadata), deletes, compactions,
the lexical part, calibration, rebuilds, reloads from disk and writes by a second real OS process
(``tests/procs/stateful_worker.py``, one long-lived process), and checks after every step that the index
equals the model (``len``, ``get``, every stored document) and that dense (k, filters), lexical and hybrid
searches equal the exact oracles of :mod:`tests._index_oracle`. The flat index must equal the oracle
exactly; HNSW must keep recall@k against it above :data:`HNSW_RECALL_FLOOR`.

The CI budget (fixed seed) is sized for >= 2,000 steps; ``EMBEDKIT_STATEFUL_STEPS`` scales it up
(e.g. ``EMBEDKIT_STATEFUL_STEPS=20000``), and ``scripts/soak_index.py`` runs long soaks.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.index import EmbedIndex

from ._index_oracle import DIM, WORDS, LexicalStats, Model, check_ranked, index_contents, matches, recall, scratch_dir
from .conftest import ROOT, FakeEncoder

HNSW_RECALL_FLOOR = 0.9
POOL = tuple(f"d{i:02d}" for i in range(48))
# counted across machines, read by scripts/soak_index.py too ("server": the steps of tests/_server_machine.py,
# "rest": those of them that went through REST)
STEPS = {"total": 0, "runs": 0, "flat": 0, "hnsw": 0, "server": 0, "rest": 0}
FILTERS = [None, {"g": 0}, {"g": 1}, {"g": 2}, {"t": True}, {"t": False}, {"s": "a"}, {"s": None}, {"f": 1},
           {"g": True}, {"g": 1, "t": False}]

metadata = st.one_of(st.none(), st.fixed_dictionaries(
    {"g": st.integers(0, 3)},
    optional={"t": st.booleans(), "s": st.sampled_from(["a", "b", None]), "f": st.sampled_from([0.5, 1.0, 1, 2])}))
texts = st.builds(lambda ws, n: " ".join(ws) + (f" {n}" if n is not None else ""),
                  st.lists(st.sampled_from(WORDS), min_size=1, max_size=4), st.none() | st.integers(0, 30))
queries = st.builds(" ".join, st.lists(st.sampled_from(WORDS + ("无关",)), min_size=1, max_size=3))


class Worker:
    """A long-lived second writer process (see tests/procs/stateful_worker.py)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "procs" / "stateful_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))

    def __call__(self, directory, build_id, op, **kw) -> dict:
        self.proc.stdin.write(json.dumps(dict(kw, dir=str(directory), build_id=build_id, op=op, dim=DIM)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the worker process died (exit {self.proc.poll()})"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_WORKERS: list[Worker] = []


def worker(n: int) -> Worker:
    while len(_WORKERS) <= n:
        _WORKERS.append(Worker())
    if _WORKERS[n].proc.poll() is not None:
        _WORKERS[n] = Worker()
    return _WORKERS[n]


@atexit.register
def _close_workers() -> None:
    for w in _WORKERS:
        w.close()


class IndexMachine(RuleBasedStateMachine):
    INDEX = "flat"
    BASE = 0          # documents every build starts with besides the model's (HNSW: enough to be approximate)
    WORKERS = 1       # second-process writers used (the soak uses 2)

    def __init__(self):
        super().__init__()
        self.root = Path(scratch_dir("ek-stateful-"))
        self.dir = self.root / "idx"
        self.enc = FakeEncoder(DIM)
        self.model = Model()
        self.recalls: list[float] = []
        self.steps = 0
        self.pairs = self.root / "pairs.tsv"
        rows = [f"{a}\t{a}\t1" for a in WORDS] + [f"{a}\t{b}\t0" for a, b in zip(WORDS, WORDS[1:] + WORDS[:1])]
        self.pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")

    # -- helpers ----------------------------------------------------------------------------------
    def _step(self) -> None:
        STEPS["total"] += 1
        STEPS[self.INDEX] += 1
        self.steps += 1

    def _build(self, docs, lexical: bool) -> None:
        self.idx = EmbedIndex.build(self.dir, docs, encoder=self.enc, index=self.INDEX, overwrite=True,
                                    lexical=lexical)
        self.idx.auto_compact = self.auto_compact
        self.reader = EmbedIndex.load(self.dir, encoder=self.enc)   # a second object: must follow by refresh
        self.model = Model()
        self.model.add(docs)
        self.model.lexical = LexicalStats.of(d.text for d in docs) if lexical else None

    def _after_write(self) -> None:
        """A write may have compacted (automatically, or in the other process): the lexical base then holds
        the live documents, and BM25 scores with their statistics."""
        self.idx.refresh()
        if not self.idx.store.segments:
            self.model.compacted()
        self._check_after_write()

    def _free(self) -> list[str]:
        return [i for i in POOL if i not in self.model.docs]

    def _new_docs(self, data, max_size: int = 4) -> list[Doc]:
        ids = data.draw(st.lists(st.sampled_from(self._free()), min_size=1, max_size=max_size, unique=True))
        return [Doc(i, data.draw(texts), data.draw(metadata)) for i in ids]

    def _some_ids(self, data, max_size: int = 3) -> list[str]:
        return data.draw(st.lists(st.sampled_from(sorted(self.model.docs)), min_size=1, max_size=max_size, unique=True))

    def _searcher(self, data) -> EmbedIndex:
        return self.reader if data.draw(st.booleans()) else self.idx

    # -- setup --------------------------------------------------------------------------------------
    @initialize(data=st.data(), lexical=st.booleans(), auto_compact=st.booleans())
    def build(self, data, lexical, auto_compact):
        """``auto_compact`` off (in this process; the other one always compacts automatically) lets delta
        segments pile up, so searches merge base and segments (and BM25 scores segments by base statistics)."""
        self._step()
        self.auto_compact = auto_compact
        STEPS["runs"] += 1
        base = [Doc(f"b{i:03d}", f"{WORDS[i % len(WORDS)]} 基础 {i}", {"g": i % 4}) for i in range(self.BASE)]
        self._build(base + self._new_docs(data, max_size=6), lexical)

    def teardown(self):
        shutil.rmtree(self.root, ignore_errors=True)
        if self.recalls:
            mean = sum(self.recalls) / len(self.recalls)
            assert mean >= HNSW_RECALL_FLOOR, f"{self.INDEX}: mean recall@k {mean:.3f} < {HNSW_RECALL_FLOOR}"

    # -- writes -------------------------------------------------------------------------------------
    @precondition(lambda self: self._free())
    @rule(data=st.data())
    def add(self, data):
        self._step()
        docs = self._new_docs(data)
        assert self.idx.add(docs, chunk_size=data.draw(st.integers(1, 4))) == len(docs)
        self.model.add(docs)
        self._after_write()

    @precondition(lambda self: self.model.docs and self._free())
    @rule(data=st.data())
    def add_existing_id_changes_nothing(self, data):
        self._step()
        docs = self._new_docs(data, 2) + [Doc(self._some_ids(data, 1)[0], "重复 的 文档")]
        with pytest.raises(InputError, match="already in the index"):
            self.idx.add(docs)

    @precondition(lambda self: self.model.docs)
    @rule(data=st.data())
    def delete(self, data):
        self._step()
        ids = self._some_ids(data)
        assert self.idx.delete(ids) == len(ids)
        self.model.delete(ids)
        self._after_write()

    @precondition(lambda self: self.model.docs and self._free())
    @rule(data=st.data())
    def delete_unknown_id_changes_nothing(self, data):
        self._step()
        ids = self._some_ids(data, 2) + [data.draw(st.sampled_from(self._free()))]
        with pytest.raises(InputError, match="not in the index"):
            self.idx.delete(ids)

    @rule()
    def compact(self):
        self._step()
        self.idx.compact()
        assert not self.idx.store.segments
        self._after_write()

    @rule()
    def add_lexical(self):
        self._step()
        self.idx.add_lexical()
        if self.model.lexical is None:
            self.model.lexical = LexicalStats.of([])
        self._after_write()
        assert self.model.lexical is not None and not self.idx.store.segments

    @rule()
    def calibrate(self):
        self._step()
        self.idx.calibrate(self.pairs)
        self.model.calibrated = True

    @precondition(lambda self: self.model.docs)
    @rule(lexical=st.booleans())
    def rebuild(self, lexical):
        """Rebuild (``--overwrite``) from the model's documents: the lexical part may go away."""
        self._step()
        self._build(self.model.as_docs(), lexical)

    @rule()
    def reload(self):
        self._step()
        self.idx = EmbedIndex.load(self.dir, encoder=self.enc)
        self.idx.auto_compact = self.auto_compact

    @precondition(lambda self: self._free())
    @rule(data=st.data(), n=st.integers(0, 1))
    def other_process_adds(self, data, n):
        self._step()
        docs = self._new_docs(data)
        w = worker(n % self.WORKERS)
        r = w(self.dir, self.idx.manifest["build_id"], "add", docs=[[d.id, d.text, d.metadata] for d in docs])
        assert r == {"ok": True, "result": len(docs)}, r
        self.model.add(docs)
        self._after_write()

    @precondition(lambda self: self.model.docs)
    @rule(data=st.data(), n=st.integers(0, 1), compact=st.booleans())
    def other_process_deletes(self, data, n, compact):
        self._step()
        ids = self._some_ids(data)
        w = worker(n % self.WORKERS)
        r = w(self.dir, self.idx.manifest["build_id"], "delete", ids=ids)
        assert r == {"ok": True, "result": len(ids)}, r
        self.model.delete(ids)
        if compact:
            assert w(self.dir, self.idx.manifest["build_id"], "compact")["ok"]
        self._after_write()

    # -- reads --------------------------------------------------------------------------------------
    @rule(data=st.data(), query=queries, k=st.integers(1, 12), flt=st.sampled_from(FILTERS),
          mode=st.sampled_from(["dense", "dense", "lexical", "hybrid"]))
    def search(self, data, query, k, flt, mode):
        self._step()
        self._check_search(self._searcher(data), query, k, flt, mode)

    def _check_after_write(self) -> None:
        """Every mode once after each write, with a query cycling through word pairs (some repeat a word)."""
        n = self.steps
        query = f"{WORDS[n % len(WORDS)]} {WORDS[(n * 7) % len(WORDS)]}"
        for mode in ("dense", "lexical", "hybrid"):
            self._check_search(self.idx, query, 1 + n % 12, FILTERS[n % len(FILTERS)], mode)

    def _check_search(self, idx, query, k, flt, mode) -> None:
        what = f"{mode} {query!r} k={k} filter={flt}"
        if mode != "dense" and self.model.lexical is None:
            with pytest.raises(InputError, match="no lexical part"):
                idx.search(query, k, filter=flt, mode=mode)
            return
        hits = idx.search(query, k, filter=flt, mode=mode)[0]
        pairs = [(h.id, h.score) for h in hits]
        assert len(pairs) == len({i for i, _ in pairs}) and len(pairs) <= k, what
        for h in hits:
            assert h.id in self.model.docs, f"{what}: {h.id!r} is not in the model"
            assert (h.text, h.metadata) == self.model.docs[h.id][:2] and matches(flt, h.metadata), what
            assert (h.probability is not None) == (self.model.calibrated and mode == "dense"), what
        if mode == "dense":
            oracle = self.model.dense(query, flt)
            if self.INDEX == "flat":
                check_ranked(pairs, oracle, k, what)
            else:
                for i, s in pairs:
                    assert abs(s - oracle[i]) < 1e-3, f"{what}: {i} scored {s}, expected {oracle[i]}"
                self.recalls.append(recall(pairs, oracle, k))
        elif mode == "lexical":
            check_ranked(pairs, self.model.bm25(query, flt), k, what)
        else:
            fusion = idx.manifest.get("fusion") or {}
            oracle = self.model.hybrid(query, flt, k, float(fusion.get("weight", 0.7)))
            if self.INDEX == "flat" and fusion.get("method", "weighted") == "weighted" and oracle is not None:
                check_ranked(pairs, oracle, k, what, tol=1e-3)

    @rule(data=st.data())
    def get(self, data):
        self._step()
        doc_id = data.draw(st.sampled_from(POOL))
        hit = self._searcher(data).get(doc_id)
        want = self.model.docs.get(doc_id)
        assert (None if hit is None else (hit.text, hit.metadata)) == (None if want is None else want[:2])

    @invariant()
    def equals_the_model(self):
        if not hasattr(self, "idx"):
            return
        assert len(self.idx) == len(self.model.docs) == len(self.reader)
        assert index_contents(self.idx) == self.model.snapshot()
        assert (self.idx.store.lexical is not None) == (self.model.lexical is not None)
        assert (self.idx.query_path.calibration is not None) == self.model.calibrated


class HnswMachine(IndexMachine):
    INDEX = "hnsw"
    BASE = 150


def _scaled(n: int) -> int:
    return max(1, n * int(os.environ.get("EMBEDKIT_STATEFUL_STEPS", "2000")) // 2000)


COMMON = dict(derandomize=True, deadline=None, database=None, stateful_step_count=50,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])



def test_the_index_agrees_with_the_model_for_at_least_2000_steps():
    """The flat machine (50 runs) and the HNSW machine (8 runs), fixed seed: every step checked against
    the model, and >= 2,000 rule steps in all (the CI budget)."""
    ran = {}
    for machine, kind, runs in ((IndexMachine, "flat", 50), (HnswMachine, "hnsw", 8)):
        before = STEPS[kind]
        run_state_machine_as_test(machine, settings=settings(max_examples=_scaled(runs), **COMMON))
        ran[kind] = STEPS[kind] - before
    assert ran["flat"] and ran["hnsw"] and ran["flat"] + ran["hnsw"] >= 2000, ran


def test_a_repeated_query_word_scores_a_new_document_as_the_base_scores_it(tmp_path):
    """Regression (found by the machine above): a document added after the lexical part was built (a
    delta segment) scored a repeated query word once, a base document with the same text twice (bm25s),
    so '还款 还款' ranked the new document below an identical old one."""
    docs = [Doc("a", "借呗 还款"), Doc("b", "花呗 开通"), Doc("c", "银行 额度")]
    idx = EmbedIndex.build(tmp_path / "i", docs, encoder=FakeEncoder(DIM), lexical=True)
    idx.auto_compact = False
    idx.add([Doc("new", "借呗 还款")])
    for q in ("还款 还款", "借呗 花呗"):
        scores = {h.id: h.score for h in idx.search(q, 5, mode="lexical")[0]}
        assert scores["new"] == pytest.approx(scores["a"], rel=1e-5), (q, scores)
    idx.compact()  # one base: the same scores
    again = {h.id: h.score for h in idx.search("还款 还款", 5, mode="lexical")[0]}
    assert again["new"] == pytest.approx(again["a"], rel=1e-5)
