"""Long documents in the index, with the real m3e-small and real FAISS / Milvus Lite: a needle deep in a
document is found with passages and not with truncation; document-level results agree with a numpy
oracle over the passage vectors; delete, get, filters, add and reload keep documents whole."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.index import EmbedIndex

from .conftest import DEMO_CORPUS, SHARED

pytestmark = pytest.mark.slow

CMRC = SHARED / "data" / "cmrc2018" / "cmrc2018_trial.json"
NEEDLE = "南极长城站的科考队员在冰盖下面发现了一群会发出蓝色荧光的小企鹅。"
NEEDLE_QUERY = "科学家在南极找到了能发光的企鹅"


def _filler() -> list[str]:
    with open(DEMO_CORPUS, encoding="utf-8") as f:
        return [json.loads(line)["text"] + "。" for line in f if line.strip()]


def _long_docs(n_docs: int = 12, sentences: int = 40, needle_doc: int = 3, needle_at: int = 30) -> list[Doc]:
    filler = _filler()
    docs = []
    for d in range(n_docs):
        sents = [filler[(d * sentences + i) % len(filler)] for i in range(sentences)]
        if d == needle_doc:
            sents[needle_at] = NEEDLE
        docs.append(Doc(f"doc-{d}", "".join(sents), {"group": f"g{d % 3}"}))
    return docs


def _cmrc_docs(n: int = 16):
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    paras = [p for art in data for p in art["paragraphs"]][:n]
    docs = [Doc(f"c{i}", p["context"], {"n": i}) for i, p in enumerate(paras)]
    queries = [qa["question"] for p in paras for qa in p["qas"][:1]]
    return docs, queries


def test_needle_at_sentence_30_is_found_with_passages_not_with_truncation(m3e_encoder, tmp_path):
    docs = _long_docs()
    assert len(docs[3].text) > 500  # far beyond the 64-token window
    with_passages = EmbedIndex.build(tmp_path / "p", docs, encoder=m3e_encoder)
    truncated = EmbedIndex.build(tmp_path / "t", docs, encoder=m3e_encoder, split="truncate")
    hits = with_passages.search(NEEDLE_QUERY, 5)[0]
    assert hits[0].id == "doc-3"
    start = docs[3].text.index(NEEDLE)
    assert hits[0].passage["start"] <= start and start + len(NEEDLE) <= hits[0].passage["end"]
    assert NEEDLE in hits[0].passage["text"] and hits[0].text == docs[3].text
    ranked = [h.id for h in truncated.search(NEEDLE_QUERY, len(docs))[0]]
    assert ranked.index("doc-3") >= 3, ranked  # truncation never read the needle


def test_document_results_agree_with_a_numpy_oracle(m3e_encoder, tmp_path):
    docs, queries = _cmrc_docs()
    idx = EmbedIndex.build(tmp_path / "i", docs, encoder=m3e_encoder)
    sp = idx.query_path.passage_splitter()
    owner, texts = [], []
    for d in docs:
        for s, e in sp.spans(d.text):
            owner.append(d.id)
            texts.append(d.text[s:e])
    assert idx.store.count() == len(texts) > 3 * len(docs) and len(idx) == len(docs)
    pv = idx.embed(texts)
    qv = idx.embed(queries)
    scores = qv @ pv.T
    k = 5
    for q, hits in enumerate(idx.search(queries, k)):
        best: dict[str, float] = {}
        for j in np.argsort(-scores[q]):
            best.setdefault(owner[j], float(scores[q, j]))
        want = sorted(best.items(), key=lambda t: -t[1])[:k]
        assert [h.id for h in hits] == [w[0] for w in want]
        assert len({h.id for h in hits}) == len(hits)  # each document once
        np.testing.assert_allclose([h.score for h in hits], [w[1] for w in want], rtol=0, atol=1e-5)
    # passages: the exact top-k passage rows
    for q, hits in enumerate(idx.search(queries, k, unit="passages")):
        top = np.argsort(-scores[q])[:k]
        assert [h.passage["text"] for h in hits] == [texts[j] for j in top]
        assert [h.id for h in hits] == [owner[j] for j in top]


BACKENDS = ["flat", "hnsw", "int8", "milvus"]


@pytest.mark.parametrize("kind", BACKENDS)
def test_delete_get_filter_add_keep_documents_whole(m3e_encoder, tmp_path, kind):
    docs = _long_docs(n_docs=6)
    idx = EmbedIndex.build(tmp_path / "i", docs, encoder=m3e_encoder, index=kind)
    try:
        rows = idx.store.count()
        assert len(idx) == 6 and rows > 6 * 5
        got = idx.get("doc-3")
        assert got.text == docs[3].text and got.metadata == {"group": "g0"}  # whole text, user metadata only
        assert idx.get("doc-3\x1f1") is None
        hits = idx.search(NEEDLE_QUERY, 10, filter={"group": "g0"})[0]
        assert [h.id for h in hits][0] == "doc-3" and {h.metadata["group"] for h in hits} == {"g0"}
        assert len(hits) == 2  # doc-0 and doc-3, each once
        n3 = idx.store.count() - EmbedIndex.build(tmp_path / "one", [docs[3]], encoder=m3e_encoder).store.count()
        assert idx.delete(["doc-3"]) == 1
        assert len(idx) == 5 and idx.store.count() == n3 and idx.get("doc-3") is None
        assert "doc-3" not in [h.id for h in idx.search(NEEDLE_QUERY, 10)[0]]
        if idx.store.LOCAL:
            assert idx.check() == []
        with pytest.raises(InputError, match="not in the index"):
            idx.delete(["doc-1\x1f1"])
        assert idx.add([docs[3]]) == 1 and len(idx) == 6 and idx.store.count() == rows
        again = EmbedIndex.load(tmp_path / "i", encoder=m3e_encoder)
        assert len(again) == 6 and again.search(NEEDLE_QUERY, 1)[0][0].id == "doc-3"
        if idx.store.LOCAL:
            idx.compact()  # (the add may have compacted already: pending changes past 10% of the base)
            assert not idx.store.segments and len(idx) == 6 and idx.check() == []
            assert idx.search(NEEDLE_QUERY, 1)[0][0].passage["text"].count(NEEDLE) == 1
    finally:
        idx.store.close()


def test_passage_rules_and_bad_input(m3e_encoder, tmp_path, caplog):
    docs = _long_docs(n_docs=3)
    with pytest.raises(InputError, match="contains the control character U\\+001F"):
        EmbedIndex.build(tmp_path / "a", [Doc("a\x1fb", "文本")], encoder=m3e_encoder)
    with pytest.raises(InputError, match="metadata key '_ek_span' is reserved"):
        EmbedIndex.build(tmp_path / "b", [Doc("a", "文本", {"_ek_span": 1})], encoder=m3e_encoder)
    with caplog.at_level(logging.WARNING, logger="embedkit"):
        t = EmbedIndex.build(tmp_path / "t", docs + [Doc("short", "短句")], encoder=m3e_encoder, split="truncate")
    assert "3 of 4 documents are longer than the encoder's window (62 tokens) and were cut" in caplog.text
    assert t.manifest["passages"]["truncated_documents"] == 3 and t.store.count() == 4
    with pytest.raises(InputError, match="rebuild it with `embedkit index build ... --split passages"):
        t.search("问题", 3, unit="passages")
    p = EmbedIndex.build(tmp_path / "p", docs + [Doc("short", "短句"), Doc("dots", "。。。！！？")],
                         encoder=m3e_encoder, passage_tokens=32, passage_overlap=8)
    m = p.info()
    assert m["passages"]["max_tokens"] == 32 and m["passages"]["overlap"] == 8
    assert m["passages"]["split_documents"] == 3 and m["count"] == 5 and m["rows"] > 3 * 10
    assert p.search("短句", 1)[0][0].passage is None  # read whole: no passage to point at
    assert p.search("短句", 1, unit="passages")[0][0].passage == {"index": 0, "start": 0, "end": 2, "text": "短句"}
    with pytest.raises(InputError, match="unit 'passages' needs mode 'dense'"):
        p.search("问题", 3, unit="passages", mode="lexical")
    with pytest.raises(InputError, match="unit 'pages' is not one of documents, passages"):
        p.search("问题", 3, unit="pages")
    with pytest.raises(InputError, match="passage max_tokens 100 exceeds the encoder's window of 62"):
        EmbedIndex.build(tmp_path / "x", docs, encoder=m3e_encoder, passage_tokens=100)


def test_check_rows_finds_missing_and_orphan_passages():
    from embedkit.index.passages import check_rows

    class Rows:
        def __init__(self, rows):
            self.rows = rows

        def iterate(self):
            yield [(i, rid, "", meta, None) for i, (rid, meta) in enumerate(self.rows)]

    whole = [("a", {"_ek_passages": 3}), ("a\x1f1", {"_ek_passage": 1}), ("a\x1f2", {"_ek_passage": 2}), ("b", None)]
    assert check_rows(Rows(whole), 2) == []
    missing = check_rows(Rows(whole[:2] + whole[3:]), 2)
    assert missing == ["document 'a' has 3 passages but rows for passages [1] besides the first"]
    orphan = check_rows(Rows(whole[1:]), 1)
    assert any("without their first row, e.g. 'a'" in p for p in orphan)
    assert check_rows(Rows(whole), 3) == ["the manifest counts 3 documents, the store holds 2"]
