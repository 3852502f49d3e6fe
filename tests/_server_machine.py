"""The server-backed part of the stateful soak (issue 19): a real ``embedkit serve`` and two writer
processes against the in-memory model, checked exactly (flat index).

One :class:`Backend` lives for a whole soak: an index directory (flat, with a lexical part, the tiny real
model of ../shared/models), one ``embedkit serve`` over it (127.0.0.1, torch, one encoder thread), two
long-lived writer processes (``tests/procs/stateful_worker.py`` loading the same model) and a library
object in this process. :class:`ServerMachine` drives random adds and deletes through REST, the library
and both writer processes, one at a time and all three at once with a contested id, and refused REST
adds (an existing or repeated id, NaN or a 65-bit integer in metadata, blank text). After every step REST
must equal the model: ``GET /documents/{id}`` of every id a write touched, ``/health``'s count, and
dense, lexical and hybrid searches with k and filters against the exact oracles of
:mod:`tests._index_oracle` (the model's vectors come from the same real query path, computed here one
text at a time). That is a history check: no lost write (an acknowledged add or delete not visible), no
phantom write (a refused one visible), and with concurrent writers exactly one winner per contested id.
Each hypothesis example starts by resetting the documents, not by rebuilding, so the server and the
writers load their model once per soak. :meth:`Backend.close` returns the server's own counters
(requests by status, 5xx) and the tracebacks in its log."""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import quote

import httpx
import hypothesis.strategies as st
import numpy as np
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from embedkit.corpus import Doc

from ._api_util import Server, serve_env
from ._index_oracle import WORDS, LexicalStats, OracleModel, check_ranked, index_contents, matches, scratch_dir
from .test_index_stateful import FILTERS, POOL, STEPS, Worker, metadata, queries, texts

SERVER_ARGS = ("--backend", "torch", "--encoder-threads", "1", "--batch-wait-ms", "0")
WRITERS = ("rest", "w0", "w1")
REFUSALS = {"existing": 409, "twice": 409, "nan": 422, "huge": 422, "blank": 422}


class Backend:
    """The index, the server, the two writer processes and this process's library object (see above)."""

    def __init__(self, encoder):
        from embedkit.index import EmbedIndex

        self.root = Path(scratch_dir("ek-serve-soak-"))
        self.dir = self.root / "idx"
        EmbedIndex.build(self.dir, [Doc("seed", "种子 文档")], encoder=encoder, index="flat", lexical=True)
        self.idx = EmbedIndex.load(self.dir, encoder=encoder)
        self.build_id = self.idx.manifest["build_id"]
        self.workers = [Worker(), Worker()]
        self.pool = ThreadPoolExecutor(max_workers=len(WRITERS), thread_name_prefix="soak-writer")
        self._vectors: dict[str, np.ndarray] = {}
        self.sent, self.starts = 0, 0
        self.server: Server | None = None
        warm = self.pool.map(lambda w: self.worker(w, "warm"), WRITERS[1:])  # each loads the model meanwhile
        self.start()
        warm = list(warm)
        assert all(r["ok"] for r in warm), warm

    def start(self) -> None:
        """Start the server (again, after a crash: the crash was a divergence already)."""
        if self.server is not None:
            self.http.close()
            self.server.stop()
        self.starts += 1
        self.server = Server(self.dir, self.root / f"server-{self.starts}.log", *SERVER_ARGS,
                             env=serve_env(OMP_NUM_THREADS="1")).wait_ready()
        self.http = httpx.Client(base_url=self.server.url, timeout=120)

    def vector(self, text: str) -> np.ndarray:
        v = self._vectors.get(text)
        if v is None:
            v = self._vectors[text] = self.idx.embed([text])[0]
        return v

    def request(self, method: str, path: str, body=None) -> httpx.Response:
        """One REST request; ``body`` is sent as written (NaN tokens included)."""
        self.sent += 1
        if body is None:
            return self.http.request(method, path)
        content = json.dumps(body, ensure_ascii=False, allow_nan=True).encode()
        return self.http.request(method, path, content=content, headers={"content-type": "application/json"})

    def worker(self, name: str, op: str, **kw) -> dict:
        n = WRITERS.index(name) - 1
        if self.workers[n].proc.poll() is not None:  # died (a divergence already reported): a new one
            self.workers[n] = Worker()
        return self.workers[n](self.dir, self.build_id, op, real=True, **kw)

    def stats(self) -> dict:
        """The server's own request counters (Prometheus text of /metrics) and its log's tracebacks."""
        counts: dict[str, int] = {}
        if self.server.alive():
            for line in self.http.get("/metrics").text.splitlines():
                m = re.match(r"embedkit_requests_total\{(.*)\} (\S+)$", line)
                if m:
                    status = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))["status"]
                    counts[status] = counts.get(status, 0) + int(float(m.group(2)))
        logs = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(self.root.glob("server-*.log"))]
        return {"requests": sum(counts.values()), "by_status": dict(sorted(counts.items())),
                "5xx": sum(n for s, n in counts.items() if s.startswith("5")),
                "log_tracebacks": sum(text.count("Traceback") for text in logs), "starts": self.starts,
                "alive_at_end": self.server.alive(), "client_requests": self.sent}

    def close(self) -> dict:
        stats = self.stats()
        self.http.close()
        stats["exit_code"] = self.server.stop()
        self.pool.shutdown()
        for w in self.workers:  # both exit at once
            w.proc.stdin.close()
        for w in self.workers:
            w.close()
        shutil.rmtree(self.root, ignore_errors=True)
        return stats


def _doc_json(d: Doc) -> dict:
    return {"id": d.id, "text": d.text, "metadata": d.metadata}


def _is_error(r: httpx.Response, status: int, *needles: str) -> bool:
    body = r.json()
    return (r.status_code == status and set(body) == {"error"} and set(body["error"]) == {"type", "message"}
            and all(n in body["error"]["message"] for n in needles))


class ServerMachine(RuleBasedStateMachine):
    backend: Backend | None = None   # set by the soak script or the test before running the machine

    def __init__(self):
        super().__init__()
        assert self.backend is not None, "set ServerMachine.backend first"
        self.b = self.backend
        if not self.b.server.alive():
            self.b.start()
        self.idx = self.b.idx
        self.model = OracleModel(self.b.vector)
        self.steps = 0
        self.ready = False

    # -- helpers ----------------------------------------------------------------------------------
    def _step(self, rest: bool = True) -> None:
        STEPS["total"] += 1
        STEPS["server"] += 1
        STEPS["rest"] += rest
        self.steps += 1

    def _free(self) -> list[str]:
        return [i for i in POOL if i not in self.model.docs]

    def _new_docs(self, data, max_size: int = 3, pool=None) -> list[Doc]:
        pool = self._free() if pool is None else pool
        ids = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=max_size, unique=True))
        return [Doc(i, data.draw(texts), data.draw(metadata)) for i in ids]

    def _some_ids(self, data, max_size: int = 3) -> list[str]:
        return data.draw(st.lists(st.sampled_from(sorted(self.model.docs)), min_size=1, max_size=max_size, unique=True))

    def _after_write(self, ids) -> None:
        """REST sees exactly the model: every id the step touched, a dense search and a lexical or hybrid one."""
        self.idx.refresh()
        if not self.idx.store.segments:   # the write compacted: the lexical base is the live documents
            self.model.compacted()
        for i in ids:
            self._check_get(i)
        n = self.steps
        query = f"{WORDS[n % len(WORDS)]} {WORDS[(n * 7) % len(WORDS)]}"
        for mode in ("dense", ("lexical", "hybrid")[n % 2]):
            self._check_search(query, 1 + n % 12, FILTERS[n % len(FILTERS)], mode)

    def _check_get(self, doc_id: str) -> None:
        r = self.b.request("GET", f"/documents/{quote(doc_id, safe='')}")
        want = self.model.docs.get(doc_id)
        if want is None:
            assert _is_error(r, 404), f"GET {doc_id}: a phantom or undeleted document: {r.status_code} {r.text[:300]}"
        else:
            assert r.status_code == 200, f"GET {doc_id}: an acknowledged write is lost: {r.status_code} {r.text[:300]}"
            assert r.json() == {"id": doc_id, "text": want[0], "metadata": want[1]}, (doc_id, r.json(), want[:2])

    def _check_search(self, query: str, k: int, flt, mode: str) -> None:
        what = f"REST {mode} {query!r} k={k} filter={flt}"
        r = self.b.request("POST", "/search", {"query": query, "top_k": k, "filter": flt, "mode": mode})
        assert r.status_code == 200, f"{what}: {r.status_code} {r.text[:500]}"
        body = r.json()
        assert body["count"] == len(self.model.docs) and body["results"][0]["query"] == query, (what, body["count"])
        hits = body["results"][0]["hits"]
        pairs = [(h["id"], h["score"]) for h in hits]
        for h in hits:
            assert h["id"] in self.model.docs, f"{what}: {h['id']!r} is not in the model"
            assert (h["text"], h["metadata"]) == self.model.docs[h["id"]][:2] and matches(flt, h["metadata"]), what
            assert "probability" not in h, what
        if mode == "dense":
            check_ranked(pairs, self.model.dense(query, flt), k, what)
        elif mode == "lexical":
            check_ranked(pairs, self.model.bm25(query, flt), k, what)
        else:
            fusion = self.idx.manifest.get("fusion") or {}
            oracle = self.model.hybrid(query, flt, k, float(fusion.get("weight", 0.7)))
            if fusion.get("method", "weighted") == "weighted" and oracle is not None:
                check_ranked(pairs, oracle, k, what, tol=1e-3)
            assert len(pairs) == len({i for i, _ in pairs}) <= k, what

    # -- setup --------------------------------------------------------------------------------------
    @initialize(data=st.data())
    def reset(self, data):
        """Delete whatever the previous example left, add fresh documents, compact (the lexical base)."""
        self._step(rest=False)
        STEPS["runs"] += 1
        self.idx.refresh()
        live = sorted(index_contents(self.idx))
        if live:
            self.idx.delete(live)
        docs = self._new_docs(data, max_size=6, pool=list(POOL))
        self.idx.add(docs)
        self.idx.compact()
        self.model.add(docs)
        self.model.lexical = LexicalStats.of(d.text for d in docs)
        self.ready = True
        self._after_write([d.id for d in docs] + live[:3])

    # -- writes, one at a time ------------------------------------------------------------------------
    @precondition(lambda self: self._free())
    @rule(data=st.data(), writer=st.sampled_from(WRITERS + ("here",)))
    def add(self, data, writer):
        """Through REST, a writer process or this process's library object."""
        self._step(writer == "rest")
        docs = self._new_docs(data)
        if writer == "rest":
            r = self.b.request("POST", "/documents", {"documents": [_doc_json(d) for d in docs]})
            assert r.status_code == 201, (r.status_code, r.text[:500])
            assert r.json() == {"added": len(docs), "ids": [d.id for d in docs],
                                "count": len(self.model.docs) + len(docs)}, r.json()
        elif writer == "here":
            assert self.idx.add(docs) == len(docs)
        else:
            r = self.b.worker(writer, "add", docs=[[d.id, d.text, d.metadata] for d in docs])
            assert r == {"ok": True, "result": len(docs)}, r
        self.model.add(docs)
        self._after_write([d.id for d in docs])

    @precondition(lambda self: self.model.docs)
    @rule(data=st.data(), writer=st.sampled_from(WRITERS + ("here",)), compact=st.booleans())
    def delete(self, data, writer, compact):
        self._step(writer == "rest")
        ids = self._some_ids(data, 1 if writer == "rest" else 3)
        if writer == "rest":
            r = self.b.request("DELETE", f"/documents/{quote(ids[0], safe='')}")
            assert r.status_code == 200, (r.status_code, r.text[:500])
            assert r.json() == {"deleted": 1, "id": ids[0], "count": len(self.model.docs) - 1}, r.json()
        elif writer == "here":
            assert self.idx.delete(ids) == len(ids)
        else:
            r = self.b.worker(writer, "delete", ids=ids)
            assert r == {"ok": True, "result": len(ids)}, r
            if compact:
                assert self.b.worker(writer, "compact")["ok"]
        self.model.delete(ids)
        self._after_write(ids)

    @precondition(lambda self: self.model.docs and self._free())
    @rule(data=st.data(), how=st.sampled_from(sorted(REFUSALS)))
    def refused_rest_add_adds_nothing(self, data, how):
        """A refused add (409/422 in the error shape) leaves no trace: none of its ids becomes visible."""
        self._step()
        docs = self._new_docs(data, 2)
        body = [_doc_json(d) for d in docs]
        if how == "existing":
            body.append({"id": self._some_ids(data, 1)[0], "text": "重复 的 文档"})
        elif how == "twice":
            body.append(dict(body[0], text="又 一次"))
        elif how == "blank":
            body[-1]["text"] = " \u3000\t"
        else:
            body[-1]["metadata"] = {"g": float("nan")} if how == "nan" else {"g": {"h": [2 ** 64]}}
        r = self.b.request("POST", "/documents", {"documents": body})
        assert _is_error(r, REFUSALS[how]), (how, r.status_code, r.text[:500])
        for d in docs:
            self._check_get(d.id)

    @precondition(lambda self: self._free())
    @rule(data=st.data())
    def rest_delete_unknown_id_is_404(self, data):
        self._step()
        doc_id = data.draw(st.sampled_from(self._free()))
        assert _is_error(self.b.request("DELETE", f"/documents/{doc_id}"), 404, doc_id)

    @rule()
    def compact(self):
        self._step(rest=False)
        self.idx.compact()
        self._after_write([])

    # -- three writers at once ------------------------------------------------------------------------
    @precondition(lambda self: len(self.model.docs) >= 4 and len(self._free()) >= 7)
    @rule(data=st.data(), kinds=st.tuples(*[st.sampled_from(["add", "delete"])] * 3), contested=st.booleans())
    def three_writers_at_once(self, data, kinds, contested):
        """REST and both writer processes write at the same time, on their own ids and (``contested``)
        one id that every adder (or every deleter) names: exactly one of those wins, every other write
        succeeds, and afterwards the index holds exactly the acknowledged writes."""
        self._step()
        free, live = self._free(), sorted(self.model.docs)
        adders = [w for w, k in zip(WRITERS, kinds) if k == "add"]
        deleters = [w for w, k in zip(WRITERS, kinds) if k == "delete"]
        shared_add = free.pop() if contested and len(adders) > 1 else None
        shared_del = live.pop() if contested and len(deleters) > 1 else None
        ops = {}
        for w in adders:
            docs = self._new_docs(data, 2, pool=free)
            free = [i for i in free if i not in {d.id for d in docs}]
            if shared_add:
                docs.append(Doc(shared_add, f"争用 {w}", {"writer": w}))
            ops[w] = ("add", docs)
        for w in deleters:
            own = [] if shared_del and w == "rest" else [data.draw(st.sampled_from(live))]
            live = [i for i in live if i not in own]
            ops[w] = ("delete", own + ([shared_del] if shared_del else []))
        running = {w: self.b.pool.submit(self._write, w, *ops[w]) for w in ops}
        wait(running.values())  # all of them, even when one fails: none may run on into the next step
        results = {w: f.result() for w, f in running.items()}
        for shared in (shared_add, shared_del):
            if shared is not None:
                winners = [w for w, (_, x) in ops.items() if results[w] and shared in _ids(x)]
                assert len(winners) == 1, f"contested {shared}: winners {winners}, results {results}"
        for w, (kind, x) in ops.items():
            assert results[w] or shared_add in _ids(x) or shared_del in _ids(x), f"{w} {kind} failed: {results}"
            if results[w] and kind == "add":
                self.model.add(x)
            elif results[w]:
                self.model.delete(x)
        self.idx.refresh()
        self.idx.compact()   # several commits: compact so that the lexical base is known again
        self.model.compacted()
        touched = sorted({i for _, x in ops.values() for i in _ids(x)})
        self._after_write(touched)
        # The race chose who lost the contested id, and with it whose own documents were refused (checked
        # just now). Write those through the library, so that the ids present from here on, and so what
        # later steps draw, do not depend on the race: hypothesis needs the same choices to draw the same.
        lost = [(k, [i for i in x if _ids([i])[0] not in (shared_add, shared_del)])
                for w, (k, x) in ops.items() if not results[w]]
        redo_add = [d for k, x in lost if k == "add" for d in x]
        redo_del = [i for k, x in lost if k == "delete" for i in x]
        if redo_add:
            assert self.idx.add(redo_add) == len(redo_add)
            self.model.add(redo_add)
        if redo_del:
            assert self.idx.delete(redo_del) == len(redo_del)
            self.model.delete(redo_del)
        if redo_add or redo_del:
            self._after_write(touched)

    def _write(self, writer: str, kind: str, x) -> bool:
        """One writer's part: True when acknowledged, False when refused for the contested id."""
        if writer == "rest" and kind == "add":
            r = self.b.request("POST", "/documents", {"documents": [_doc_json(d) for d in x]})
            assert r.status_code == 201 or _is_error(r, 409, "already in the index"), (r.status_code, r.text[:300])
            return r.status_code == 201
        if writer == "rest":
            r = self.b.request("DELETE", f"/documents/{quote(x[0], safe='')}")
            assert r.status_code == 200 or _is_error(r, 404), (r.status_code, r.text[:300])
            return r.status_code == 200
        if kind == "add":
            r = self.b.worker(writer, "add", docs=[[d.id, d.text, d.metadata] for d in x])
        else:
            r = self.b.worker(writer, "delete", ids=x)
        need = "already in the index" if kind == "add" else "not in the index"
        assert r == {"ok": True, "result": len(x)} or (not r["ok"] and need in r["error"]), r
        return r["ok"]

    # -- reads --------------------------------------------------------------------------------------
    @rule(query=queries, k=st.integers(1, 12), flt=st.sampled_from(FILTERS),
          mode=st.sampled_from(["dense", "dense", "lexical", "hybrid"]))
    def search(self, query, k, flt, mode):
        self._step()
        self._check_search(query, k, flt, mode)

    @rule(doc_id=st.sampled_from(POOL))
    def get(self, doc_id):
        self._step()
        self._check_get(doc_id)

    @invariant()
    def equals_the_model(self):
        if not self.ready:
            return
        assert len(self.idx) == len(self.model.docs)
        assert index_contents(self.idx) == self.model.snapshot()
        r = self.b.request("GET", "/health")
        assert r.status_code == 200 and r.json()["count"] == len(self.model.docs), r.text[:300]


def _ids(x) -> list[str]:
    return [d.id if isinstance(d, Doc) else d for d in x]
