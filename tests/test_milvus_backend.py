"""Milvus backend specifics, on a real embedded Milvus Lite: filter translation, credentials never in
the manifest, fail-fast on an unreachable server, the real model end to end, FAISS -> Milvus migration."""

import json
import socket
import threading

import numpy as np
import pytest

from embedkit.cli import main as _main
from embedkit.corpus import Doc, read_corpus
from embedkit.errors import EmbedkitError, IndexFormatError, InputError
from embedkit.index import EmbedIndex
from embedkit.stores.milvus_client import MilvusError, check_uri, filter_expression
from embedkit.stores.migrate import migrate

from .conftest import DEMO_CORPUS, FakeEncoder


def main(argv):
    try:
        _main(argv)
    except SystemExit as e:  # standalone click exits 0 on success
        assert e.code in (0, None), f"embedkit {argv} exited {e.code}"


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_filter_expression_escapes_and_types():
    assert filter_expression({"lang": "zh", "n": 3, "ok": True, "x": None, "f": 0.5}) == (
        'metadata["lang"] == "zh" and metadata["n"] == 3 and metadata["ok"] == true and '
        '(not (exists metadata["x"]) or not (metadata["x"] >= 0 or metadata["x"] < 0 or metadata["x"] >= "" or '
        'metadata["x"] == true or metadata["x"] == false)) and metadata["f"] == 0.5')
    assert filter_expression({"q": 'a"b\\c 中文'}) == r'metadata["q"] == "a\"b\\c 中文"'
    with pytest.raises(InputError, match=r"filter field 'a\"\]' must be a plain name"):
        filter_expression({'a"]': 1})
    with pytest.raises(InputError, match="filter value for 'n' must be a string, number"):
        filter_expression({"n": [1, 2]})
    with pytest.raises(InputError, match="must be finite"):
        filter_expression({"n": float("nan")})


def test_uri_rules():
    with pytest.raises(InputError, match="contains credentials; pass them in MILVUS_TOKEN"):
        check_uri("http://root:secret@127.0.0.1:19530")
    with pytest.raises(InputError, match="neither http"):
        check_uri("/tmp/not-a-db-file")
    assert check_uri("http://milvus:19530") == "http://milvus:19530"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    rng = np.random.default_rng(1)
    docs = [Doc(f"d{i}", f"文本 {i}", {"lang": "zh" if i % 2 else "en", "q": 'say "hi"' if i % 5 == 0 else "x"})
            for i in range(60)]
    table = {d.text: rng.standard_normal(16).astype(np.float32) for d in docs}
    return docs, table


def test_filters_with_quotes_and_texts_come_from_milvus(small, tmp_path, monkeypatch):
    docs, table = small
    monkeypatch.setenv("MILVUS_TOKEN", "tok-SECRET-123")  # used for the connection, never recorded
    d = tmp_path / "idx"
    idx = EmbedIndex.build(d, docs, encoder=FakeEncoder(16, table), index="milvus")
    text = (next(d.glob("gen-*")) / "manifest.json").read_text(encoding="utf-8")
    assert "SECRET" not in text and json.loads(text)["index"]["uri"] == "milvus.db"
    assert not list(d.glob("gen-*/docs.sqlite"))  # no per-replica copy of the documents
    q = np.stack([table["文本 5"]])
    hits = idx.search_vectors(q / np.linalg.norm(q), 5, filter={"q": 'say "hi"', "lang": "zh"})[0]
    assert hits and {h.id for h in hits} <= {f"d{i}" for i in range(60) if i % 10 == 5}
    assert hits[0].id == "d5" and hits[0].text == "文本 5" and hits[0].metadata["lang"] == "zh"
    assert idx.get("d5").metadata == {"lang": "zh", "q": 'say "hi"'} and idx.get("nope") is None
    with pytest.raises(InputError, match="id 'd1' is already in the index"):
        idx.add([Doc("d1", "again")])
    assert len(idx) == 60


def test_existing_collection_needs_overwrite_and_missing_collection_is_reported(small, tmp_path):
    docs, table = small
    uri = str(tmp_path / "shared.db")
    params = {"uri": uri, "collection": "faq"}
    EmbedIndex.build(tmp_path / "a", docs, encoder=FakeEncoder(16, table), index="milvus", index_params=params)
    with pytest.raises(InputError, match="collection 'faq' already exists"):
        EmbedIndex.build(tmp_path / "b", docs, encoder=FakeEncoder(16, table), index="milvus",
                         index_params=params)
    b = EmbedIndex.build(tmp_path / "b", docs[:10], encoder=FakeEncoder(16, table), index="milvus:hnsw",
                         index_params=params, overwrite=True)
    assert len(b) == 10
    with pytest.raises(IndexFormatError, match="Milvus collection 'faq' does not exist"):
        b.store.client.drop_collection(b.store.physical)
        EmbedIndex.load(tmp_path / "b", encoder=FakeEncoder(16, table))
    with pytest.raises(InputError, match="Milvus index type 'ivf-pq'"):
        EmbedIndex.build(tmp_path / "c", docs, encoder=FakeEncoder(16, table), index="milvus:ivf-pq")


def test_unreachable_server_fails_fast_with_a_clear_error(small, tmp_path):
    docs, table = small
    uri = f"http://127.0.0.1:{closed_port()}"
    box = {}

    def run():
        try:
            EmbedIndex.build(tmp_path / "r", docs, encoder=FakeEncoder(16, table), index="milvus",
                             index_params={"uri": uri})
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)  # a hang guard, not a performance assertion
    assert not t.is_alive(), "an unreachable Milvus URI hung instead of failing"
    assert isinstance(box.get("e"), MilvusError) and isinstance(box["e"], EmbedkitError)
    assert f"cannot reach Milvus at '{uri}'" in str(box["e"])
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_real_model_cli_build_search_and_migrate_from_faiss(tmp_path, capsys, m3e_encoder):
    faiss_dir, milvus_dir, pq_dir = tmp_path / "faiss", tmp_path / "milvus", tmp_path / "pq-milvus"
    docs = read_corpus(DEMO_CORPUS)[::3]  # 121 documents over every topic: keeps the test quick
    flat = EmbedIndex.build(faiss_dir, docs, encoder=m3e_encoder, reduce="whitening:64", index="hnsw")
    main(["-q", "index", "migrate", str(faiss_dir), str(milvus_dir), "--milvus-collection", "faq_zh"])
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == len(docs) and out["vectors"] == "reconstructed" and out["collection"] == "faq_zh"
    mil = EmbedIndex.load(milvus_dir, encoder=m3e_encoder)
    assert mil.manifest["reducer"] == flat.manifest["reducer"] and len(mil) == len(docs)
    queries = ["信用卡额度怎么提高", "飞机托运行李能带多重"]
    a, b = flat.search(queries, 5), mil.search(queries, 5)
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    np.testing.assert_allclose([[h.score for h in r] for r in a], [[h.score for h in r] for r in b], atol=1e-5)
    top = mil.search("信用卡额度怎么提高", 3, filter={"topic": "银行卡与信用卡"})[0]
    assert top[0].text == "如何提升信用卡的额度" and all(h.metadata["topic"] == "银行卡与信用卡" for h in top)
    # CLI search over the Milvus index, and a lossy FAISS index migrated by re-encoding its texts
    main(["-q", "search", str(milvus_dir), "信用卡额度怎么提高", "-k", "2", "--json", "--filter", "topic=银行卡与信用卡"])
    hits = json.loads(capsys.readouterr().out.splitlines()[0])["hits"]
    assert hits[0]["id"] == top[0].id
    pq = EmbedIndex.build(tmp_path / "pq", docs, encoder=m3e_encoder, index="ivf-pq")
    idx = migrate(tmp_path / "pq", pq_dir, index="milvus:ivf-flat", encoder=m3e_encoder)
    assert idx.manifest["migrated_from"]["vectors"] == "re-encoded" and len(idx) == len(pq)
    exact = m3e_encoder.encode(queries) @ m3e_encoder.encode([d.text for d in docs]).T
    got = [[h.id for h in r] for r in idx.search(queries, 1)]
    assert got == [[docs[int(np.argmax(row))].id] for row in exact]
    # delete through the CLI (no model load) goes to Milvus
    main(["-q", "index", "delete", str(milvus_dir), top[0].id])
    assert EmbedIndex.load(milvus_dir, encoder=m3e_encoder).get(top[0].id) is None


def test_overwrite_swaps_an_alias_and_racing_adds_leave_one_row(small, tmp_path):
    """--overwrite builds a new physical collection and moves the alias; the same id added by two
    writers that both passed the existence check is one row (upsert), not two."""
    docs, table = small
    d = tmp_path / "alias"
    params = {"collection": "faq_alias"}
    first = EmbedIndex.build(d, docs, encoder=FakeEncoder(16, table), index="milvus", index_params=params)
    old_physical = first.store.physical
    client = first.store.client
    assert client.describe_alias("faq_alias")["collection_name"] == old_physical
    second = EmbedIndex.build(d, docs[:20], encoder=FakeEncoder(16, table), index="milvus", index_params=params,
                              overwrite=True)
    new_physical = second.store.physical
    assert new_physical != old_physical and not client.has_collection(old_physical)
    assert client.describe_alias("faq_alias")["collection_name"] == new_physical and len(second) == 20
    assert not list(d.glob("gen-*/docs.sqlite"))
    vec = np.stack([table[docs[0].text]])
    for _ in range(2):  # two replicas that both saw the id as new
        second.store.add_batches(iter([([Doc("same-id", "并发写入")], vec)]))
    rows = client.query(new_physical, filter='id == "same-id"', output_fields=["id"])
    assert len(rows) == 1 and len(second) == 21
