"""``index reembed``: a live index re-encoded with another model equals a fresh build with that model,
takes the writes committed meanwhile, refits or drops what depended on the old model, and a running
server keeps answering across the switch (real processes)."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.index import EmbedIndex
from embedkit.index import reembed as reembed_mod

from ._api_util import Server, demo_docs
from .conftest import M3E, STS, TINY

LONG = "。".join(f"第{i}段讲的是银行卡和信用卡的一件小事" for i in range(30)) + "。"
QUERIES = ["信用卡额度太低能调高吗", "快递到哪里了", "明天会下雨吗", "租房押金怎么退", "第12段讲的是什么"]


def _docs():
    return demo_docs(every=8) + [Doc("long-1", LONG, {"topic": "长文"})]


def _hits(idx, **kw):
    return [[(h.id, round(h.score, 4)) for h in hits] for hits in idx.search(QUERIES, k=5, **kw)]


@pytest.fixture()
def tiny_index(tmp_path, tiny_encoder):
    idx = EmbedIndex.build(tmp_path / "idx", _docs(), encoder=tiny_encoder, lexical=True)
    idx.auto_compact = False
    idx.add([Doc("late-1", "后来加进来的一条关于信用卡的文档", {"topic": "银行卡与信用卡"})])
    idx.delete([_docs()[0].id])
    return idx


def test_reembedded_index_equals_a_fresh_build_with_the_new_model(tiny_index, m3e_encoder, tmp_path):
    before_gen = tiny_index.generation.name
    summary = tiny_index.reembed(encoder=m3e_encoder)
    assert summary["previous_model"] == str(TINY) and summary["model"] == str(M3E)
    assert summary["documents"] == len(_docs()) and summary["writes_caught_up"] == 0
    live = EmbedIndex.load(tiny_index.directory, encoder=m3e_encoder)
    assert live.generation.name != before_gen and live.manifest["reembedded"]["from"]["model"] == str(TINY)
    assert live.manifest["build_id"] != tiny_index.manifest["build_id"] or live.generation.name != before_gen
    docs = [d for d in _docs() if d.id != _docs()[0].id] + [Doc("late-1", "后来加进来的一条关于信用卡的文档",
                                                               {"topic": "银行卡与信用卡"})]
    fresh = EmbedIndex.build(tmp_path / "fresh", docs, encoder=m3e_encoder, lexical=True)
    assert len(live) == len(fresh) and live.info()["rows"] == fresh.info()["rows"]
    for mode in ("dense", "lexical", "hybrid"):
        got, want = _hits(live, mode=mode), _hits(fresh, mode=mode)
        assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want], mode
        np.testing.assert_allclose([[s for _, s in r] for r in got], [[s for _, s in r] for r in want], atol=2e-4)
    assert _hits(live, filter={"topic": "长文"})[4][0][0] == "long-1"  # passages kept, filter kept
    assert live.get("long-1").text == LONG and live.check() == []
    # the object that was handed the old index follows the switch on its next read
    assert _hits(tiny_index) == _hits(live)


def test_writes_committed_during_the_build_are_taken(tiny_index, m3e_encoder, monkeypatch):
    other = EmbedIndex.load(tiny_index.directory, encoder=tiny_index.encoder)  # another writer
    real_build = EmbedIndex.build.__func__

    def build_then_write(cls, directory, docs, **kw):
        built = real_build(cls, directory, docs, **kw)
        other.add([Doc("during-1", "重新编码期间加进来的文档", {"topic": "x"})])
        other.delete(["late-1"])
        return built

    monkeypatch.setattr(EmbedIndex, "build", classmethod(build_then_write))
    summary = tiny_index.reembed(encoder=m3e_encoder)
    assert summary["writes_caught_up"] == 2
    live = EmbedIndex.load(tiny_index.directory, encoder=m3e_encoder)
    assert live.get("during-1") is not None and live.get("late-1") is None
    assert live.search(["重新编码期间加进来的文档"], k=1)[0][0].id == "during-1"
    assert len(live) == len(_docs())


def test_calibration_is_refitted_or_dropped_never_carried(tmp_path, tiny_encoder, m3e_encoder):
    pairs = tmp_path / "pairs.tsv"
    lines = (STS / "LCQMC" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:300]
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    idx = EmbedIndex.build(tmp_path / "idx", _docs(), encoder=tiny_encoder)
    idx.calibrate(pairs)
    old_threshold = idx.manifest["calibration"]["threshold"]
    summary = idx.reembed(encoder=m3e_encoder)
    live = EmbedIndex.load(idx.directory, encoder=m3e_encoder)
    assert summary["calibration"]["n_pairs"] == 300 and live.query_path.calibration is not None
    assert live.manifest["calibration"]["pairs_file"] == str(pairs)
    pairs.unlink()
    summary = live.reembed(encoder=tiny_encoder)
    assert summary["calibration"] is None and "embedkit calibrate" in summary["calibration_dropped"]
    again = EmbedIndex.load(idx.directory, encoder=tiny_encoder)
    assert "calibration" not in again.manifest and again.query_path.calibration is None
    assert old_threshold is not None


def test_bad_input(tiny_index, tmp_path):
    with pytest.raises(InputError, match="needs the new model"):
        reembed_mod.reembed_index(EmbedIndex, tiny_index.directory)
    with pytest.raises(InputError, match="does not exist"):
        reembed_mod.reembed_index(EmbedIndex, tiny_index.directory, encoder=tiny_index.encoder,
                                  tune_pairs=tmp_path / "missing.tsv")
    r = CliRunner().invoke(__import__("embedkit.cli", fromlist=["cli"]).cli,
                           ["index", "reembed", str(tmp_path / "nothing-here"), "--model", str(TINY)])
    assert r.exit_code != 0 and "does not exist" in r.output


@pytest.mark.slow
def test_a_running_server_keeps_answering_across_the_switch(tmp_path, tiny_encoder):
    """Real processes: `embedkit serve` on the tiny-model index answers searches and takes adds while the
    index is re-embedded with m3e-small (`embedkit index reembed` in another process); no request fails,
    no add is lost, and the server ends on the new model."""
    import subprocess
    import sys

    from ._api_util import ROOT, serve_env

    d = tmp_path / "idx"
    EmbedIndex.build(d, _docs(), encoder=tiny_encoder)
    srv = Server(d, tmp_path / "server.log", "--backend", "torch").wait_ready()
    failures, added, stop = [], [], threading.Event()

    def traffic():
        i = 0
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            while not stop.is_set():
                r = c.post("/search", json={"query": QUERIES[i % len(QUERIES)], "top_k": 3})
                if r.status_code != 200:
                    failures.append(("search", r.status_code, r.text[:300]))
                if i % 3 == 0:
                    doc_id = f"live-{i}"
                    r = c.post("/documents", json={"documents": [{"id": doc_id, "text": f"切换期间写入的文档 {i}"}]})
                    if r.status_code != 201:
                        failures.append(("add", r.status_code, r.text[:300]))
                    else:
                        added.append(doc_id)
                i += 1

    t = threading.Thread(target=traffic)
    t.start()
    try:
        r = subprocess.run([sys.executable, "-m", "embedkit.cli", "index", "reembed", str(d), "--model", str(M3E)],
                           cwd=ROOT, env=serve_env(), capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        for _ in range(20):  # a little traffic after the switch too
            if len(added) > 3 and summary:
                break
            threading.Event().wait(0.2)
    finally:
        stop.set()
        t.join(timeout=120)
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            info = c.get("/info").json()
            assert info["model"] == str(M3E)
            assert c.post("/search", json={"query": "信用卡", "top_k": 1}).status_code == 200
    finally:
        srv.stop()
    assert failures == []
    assert added
    live = EmbedIndex.load(d)
    assert all(live.get(i) is not None for i in added)  # no add lost, whichever model encoded it
    assert len(live) == len(_docs()) + len(added) and live.check() == []
