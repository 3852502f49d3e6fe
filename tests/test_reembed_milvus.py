"""``index reembed`` on a Milvus-backed index (real Milvus Lite, real models): the new vectors go into a new
collection while the old one serves, the alias moves to it, the old collection is dropped; the result
equals a fresh Milvus build with the new model; writes committed meanwhile are taken and a write racing
the switch fails loudly instead of landing in the old collection; a failed, killed or pre-alias index
leaves (or ends in) a working index with no stray collections."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.corpus import Doc
from embedkit.errors import IndexRebuiltError
from embedkit.index import EmbedIndex
from embedkit.index import directory as dirs
from embedkit.index import reembed as reembed_mod
from embedkit.index.manifest import read_manifest, write_manifest
from embedkit.stores import milvus_swap

from ._api_util import demo_docs
from .conftest import M3E, TINY

LONG = "。".join(f"第{i}段讲的是银行卡和信用卡的一件小事" for i in range(30)) + "。"
QUERIES = ["信用卡额度太低能调高吗", "快递到哪里了", "明天会下雨吗", "租房押金怎么退", "第12段讲的是什么"]
LATE = Doc("late-1", "后来加进来的一条关于信用卡的文档", {"topic": "银行卡与信用卡"})


def _docs():
    return demo_docs(every=8) + [Doc("long-1", LONG, {"topic": "长文"})]


def _hits(idx, **kw):
    return [[(h.id, round(h.score, 4)) for h in hits] for hits in idx.search(QUERIES, k=5, **kw)]


def _same(got, want):
    assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want]
    np.testing.assert_allclose([[s for _, s in r] for r in got], [[s for _, s in r] for r in want], atol=2e-4)


def _work_names(client, alias: str = "faq") -> list[str]:
    """Work collections and aliases of re-embeds (not the live collection, which keeps its work name)."""
    live = client.describe_alias(alias)["collection_name"]
    return [n for n in client.list_collections() + client.list_aliases()["aliases"] if milvus_swap.TAG in n
            and n != live]


@pytest.fixture(autouse=True)
def no_grace(monkeypatch):
    monkeypatch.setattr(milvus_swap, "RETIRE_GRACE_S", 0.0)


@pytest.fixture()
def milvus_index(tmp_path, tiny_encoder):
    idx = EmbedIndex.build(tmp_path / "idx", _docs(), encoder=tiny_encoder, index="milvus",
                           index_params={"collection": "faq"})
    idx.add([LATE])
    idx.delete([_docs()[0].id])
    return idx


def test_reembed_builds_a_new_collection_moves_the_alias_and_equals_a_fresh_build(milvus_index, m3e_encoder,
                                                                                   tmp_path):
    client, old = milvus_index.store.client, milvus_index.store.physical
    assert client.describe_alias("faq")["collection_name"] == old
    summary = milvus_index.reembed(encoder=m3e_encoder)
    live = EmbedIndex.load(milvus_index.directory, encoder=m3e_encoder)
    new = live.store.physical
    assert new != old and live.manifest["index"]["collection"] == "faq" and summary["model"] == str(M3E)
    assert summary["milvus"] == {"collection": "faq", "physical": new, "dropped": [old], "alias": new}
    assert client.describe_alias("faq")["collection_name"] == new and not client.has_collection(old)
    assert _work_names(client) == [] and live.manifest["index"]["uri"] == "milvus.db"  # still relative
    docs = [d for d in _docs() if d.id != _docs()[0].id] + [LATE]
    fresh = EmbedIndex.build(tmp_path / "fresh", docs, encoder=m3e_encoder, index="milvus")
    assert len(live) == len(fresh) == summary["documents"] and live.info()["rows"] == fresh.info()["rows"]
    _same(_hits(live), _hits(fresh))
    _same(_hits(live, filter={"topic": "银行卡与信用卡"}), _hits(fresh, filter={"topic": "银行卡与信用卡"}))
    assert live.get("long-1").text == LONG and live.check() == []
    assert _hits(milvus_index) == _hits(live)  # the object handed the old index follows the switch
    # clients outside embedkit query the alias and get the new collection's rows
    q = m3e_encoder.encode(QUERIES[:1], normalize=True)
    assert client.search("faq", data=list(q), limit=1)[0][0]["id"] == _hits(fresh)[0][0][0]


def test_writes_during_the_build_are_taken_and_a_write_racing_the_switch_fails_loudly(milvus_index, tiny_encoder,
                                                                                      monkeypatch):
    other = EmbedIndex.load(milvus_index.directory, encoder=tiny_encoder)  # another writer
    racer = EmbedIndex.load(milvus_index.directory, encoder=tiny_encoder)  # one that writes during the switch
    real_build, real_write = EmbedIndex.build.__func__, reembed_mod.write_manifest
    threads, raced = [], []

    def build_then_write(cls, directory, docs, **kw):
        built = real_build(cls, directory, docs, **kw)
        other.add([Doc("during-1", "重新编码期间加进来的文档", {"topic": "x"})])
        other.delete(["late-1"])
        return built

    def racing_add():
        try:
            racer.add([Doc("racer-1", "切换那一刻写入的文档")])
            raced.append("added")
        except IndexRebuiltError as e:
            raced.append(e)

    def write_during_the_switch(tmp, manifest):  # the switch's commit, under the exclusive lock
        threads.append(threading.Thread(target=racing_add))
        threads[0].start()
        time.sleep(0.5)
        assert threads[0].is_alive()  # held on the lock until the switch is committed
        real_write(tmp, manifest)

    monkeypatch.setattr(EmbedIndex, "build", classmethod(build_then_write))
    monkeypatch.setattr(reembed_mod, "write_manifest", write_during_the_switch)
    summary = milvus_index.reembed(encoder=tiny_encoder)
    threads[0].join(timeout=60)
    assert summary["writes_caught_up"] == 2 and isinstance(raced[0], IndexRebuiltError)
    live = EmbedIndex.load(milvus_index.directory, encoder=tiny_encoder)
    assert live.get("during-1") is not None and live.get("late-1") is None and live.get("racer-1") is None
    assert live.search(["重新编码期间加进来的文档"], k=1)[0][0].id == "during-1"
    assert len(live) == len(_docs())
    racer.add([Doc("racer-1", "切换那一刻写入的文档")])  # retried after the switch: lands in the new collection
    assert live.get("racer-1") is not None and live.store.physical == live.store.client.describe_alias("faq")[
        "collection_name"]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_failed_or_killed_reembed_leaves_the_old_index_and_no_stray_collection(milvus_index, tiny_encoder,
                                                                                 tmp_path, monkeypatch):
    d, client, old = milvus_index.directory, milvus_index.store.client, milvus_index.store.physical
    gen, before = dirs.current_generation(d).name, _hits(milvus_index)

    def unchanged():
        live = EmbedIndex.load(d, encoder=tiny_encoder)
        assert dirs.current_generation(d).name == gen and live.store.physical == old
        assert _hits(live) == before and client.describe_alias("faq")["collection_name"] == old
        assert _work_names(client) == [] and not list(d.glob(".tmp-gen-*"))

    with pytest.raises(Exception, match="no-such-model"):  # a bad model path: fails in the build
        reembed_mod.reembed_index(EmbedIndex, d, model=str(tmp_path / "no-such-model"))
    unchanged()

    def fail(*a, **kw):  # after the new collection is complete, before the switch
        raise RuntimeError("injected failure")

    real_apply = reembed_mod._apply
    monkeypatch.setattr(reembed_mod, "_apply", fail)
    with pytest.raises(RuntimeError, match="injected"):
        milvus_index.reembed(encoder=tiny_encoder)
    unchanged()
    monkeypatch.setattr(reembed_mod, "_apply", real_apply)

    # a re-embed killed mid-build left its collection and work alias, one killed after its switch left the old
    # collection: the next re-embed drops them
    stale = f"faq{milvus_swap.TAG}{_dead_pid()}"
    client.create_collection(f"{stale}__0123abcd", dimension=4)
    client.create_alias(f"{stale}__0123abcd", stale)
    real_retire = milvus_swap.MilvusSwap.retire
    monkeypatch.setattr(milvus_swap.MilvusSwap, "retire", lambda self: {})
    milvus_index.reembed(encoder=tiny_encoder)
    assert _work_names(client) == [] and client.has_collection(old)
    monkeypatch.setattr(milvus_swap.MilvusSwap, "retire", real_retire)
    milvus_index.reembed(encoder=tiny_encoder)
    live = EmbedIndex.load(d, encoder=tiny_encoder)
    assert client.list_collections() == [live.store.physical] and client.list_aliases()["aliases"] == ["faq"]
    _same(_hits(live), before)  # the same model: the same results from the new collection


def test_an_index_from_before_aliases_opens_and_reembeds_through_the_cli(tmp_path, tiny_encoder):
    d = tmp_path / "legacy"
    idx = EmbedIndex.build(d, _docs(), encoder=tiny_encoder, index="milvus", index_params={"collection": "old"})
    client, plain = idx.store.client, idx.store.physical
    client.drop_alias("old")  # what an index built before aliases has: one plain collection, named in the manifest
    gen = dirs.current_generation(d)
    m = read_manifest(gen)
    m["index"] = {k: v for k, v in m["index"].items() if k != "physical"} | {"collection": plain}
    write_manifest(gen, m)
    legacy = EmbedIndex.load(d, encoder=tiny_encoder)
    before = _hits(legacy)
    r = CliRunner().invoke(__import__("embedkit.cli", fromlist=["cli"]).cli,
                           ["index", "reembed", str(d), "--model", str(TINY)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    live = EmbedIndex.load(d, encoder=tiny_encoder)
    new = live.store.physical
    assert live.manifest["index"]["collection"] == plain and new.startswith(plain + milvus_swap.TAG)
    assert summary["milvus"]["dropped"] == [plain] and client.describe_alias(plain)["collection_name"] == new
    _same(_hits(live), before)
    _same(_hits(legacy), before)  # the object that read the plain collection follows the switch
