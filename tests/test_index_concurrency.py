"""Writers in several real OS processes, a live server, and writers killed mid-commit."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex

from ._api_util import Server, serve_env
from .conftest import ROOT, TINY, FakeEncoder

PROCS = ROOT / "tests" / "procs"


def _ids_in(directory):
    idx = EmbedIndex.load(directory)
    return {row[1] for batch in idx.store.iterate() for row in batch}


def test_server_and_two_cli_writers_lose_nothing(tmp_path):
    """`embedkit serve` plus two CLI writer processes interleave > 100 adds and deletes; the end state is
    exactly what was committed, and the running server sees every commit without a restart."""
    d = tmp_path / "idx"
    seed = [Doc(f"seed-{i}", f"种子文档 {i}") for i in range(20)]
    from embedkit.encoder import Encoder

    EmbedIndex.build(d, seed, encoder=Encoder(str(TINY)), index="flat")
    env = serve_env(PYTHONPATH=str(ROOT))
    server = Server(d, tmp_path / "serve.log", env=env).wait_ready()
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    try:
        writers = [subprocess.Popen([sys.executable, str(PROCS / "cli_writer.py"), str(d), f"w{n}", "40", str(log)],
                                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for n, log in zip((1, 2), logs)]
        api_added, api_deleted = [], []
        i = 0
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while any(w.poll() is None for w in writers):
                doc_id = f"api-{i}"
                r = c.post("/documents", json={"documents": [{"id": doc_id, "text": f"服务端写入 {i}"}]})
                assert r.status_code == 201, r.text
                api_added.append(doc_id)
                if i % 4 == 3:
                    victim = api_added.pop(0)
                    assert c.delete(f"/documents/{victim}").status_code == 200
                    api_deleted.append(victim)
                i += 1
                time.sleep(0.05)
            for w in writers:
                assert w.wait(timeout=600) == 0, w.stderr.read()
            added, deleted = set(), set()
            for log in logs:
                for line in log.read_text().splitlines():
                    op, doc_id = line.split()
                    (added if op == "add" else deleted).add(doc_id)
            assert len(added) + len(deleted) >= 100 and i > 0
            expected = {s.id for s in seed} | (added - deleted) | set(api_added)
            assert _ids_in(d) == expected                       # exactly what was committed
            for doc_id in sorted(added - deleted)[:40] + api_added[-5:]:   # the server sees every commit
                assert c.get(f"/documents/{doc_id}").status_code == 200, doc_id
            for doc_id in sorted(deleted)[:20] + api_deleted:
                assert c.get(f"/documents/{doc_id}").status_code == 404, doc_id
            last = sorted(added - deleted)[-1]
            text = EmbedIndex.load(d).get(last).text
            hits = c.post("/search", json={"query": text, "top_k": 1}).json()["results"][0]["hits"]
            assert hits[0]["id"] == last
            assert c.get("/health").json()["count"] == len(expected)
        r = subprocess.run([sys.executable, "-m", "embedkit.cli", "index", "check", str(d)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stderr
    finally:
        server.stop()


def _kill_mid_write(tmp_path, mode, n_base):
    d = tmp_path / mode
    EmbedIndex.build(d, [Doc(f"b{i}", f"基础 {i}") for i in range(n_base)], encoder=FakeEncoder(16), index="flat")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = np.random.default_rng(7)
    for round_ in range(4):
        p = subprocess.Popen([sys.executable, str(PROCS / "crash_writer.py"), str(d), f"{mode}{round_}", "16"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        r = subprocess.run([sys.executable, "-m", "embedkit.cli", "index", "check", str(d)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr               # the last committed state is complete and readable
        idx = EmbedIndex.load(d, encoder=FakeEncoder(16))
        ids = _ids_in(d)
        assert len(idx) == len(ids) and {f"b{i}" for i in range(n_base)} <= ids
        assert len(idx.search_vectors(FakeEncoder(16).encode(["查询"], normalize=True), 5)[0]) == 5
        # the lock was released by the kernel: a new writer commits at once
        idx.add([Doc(f"after-{mode}-{round_}", "之后")])
    # the killed writers' unfinished directories were removed by the next writer
    assert not [p for p in d.iterdir() if p.name.startswith(".tmp-gen-")]


def test_writer_killed_during_commits_leaves_a_complete_index(tmp_path):
    _kill_mid_write(tmp_path, "add", 200)


def test_writer_killed_during_compaction_leaves_a_complete_index(tmp_path):
    _kill_mid_write(tmp_path, "compact", 3000)


def test_racing_overwrite_builds_end_with_one_complete_index(tmp_path):
    d = tmp_path / "race"
    EmbedIndex.build(d, [Doc("seed", "种子")], encoder=FakeEncoder(16))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for round_ in range(3):
        procs = [subprocess.Popen([sys.executable, str(PROCS / "builder.py"), str(d), name, str(n)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, n in ((f"a{round_}", 400), (f"b{round_}", 300))]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0 and "built" in out, err
        ids = _ids_in(d)
        assert ids in ({f"a{round_}-{i}" for i in range(400)}, {f"b{round_}-{i}" for i in range(300)})  # never a mix
        assert EmbedIndex.load(d).check() == []


def test_a_damaged_segment_is_named_by_index_check(tmp_path):
    d = tmp_path / "dmg"
    idx = EmbedIndex.build(d, [Doc(f"d{i}", f"文本 {i}") for i in range(30)], encoder=FakeEncoder(16))
    idx.add([Doc("x", "新的")])
    gen = d / (d / "CURRENT").read_text().strip()
    seg = next(gen.glob("seg-*.npz"))
    seg.unlink()
    seg.write_bytes(b"not a segment")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "embedkit.cli", "index", "check", str(d)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and seg.name in r.stderr and "corrupt" in r.stderr and r.stdout == ""
