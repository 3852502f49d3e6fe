"""The lexical part inside an index directory: BM25 follows adds and deletes, hybrid fusion, tuning."""

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.index import EmbedIndex
from embedkit.lexical import BM25Index, tokenize

from .conftest import STS, FakeEncoder

TEXTS = ["借呗怎么还款", "花呗如何开通", "借呗可以提前还款吗", "信用卡额度怎么提高", "花呗和借呗有什么区别",
         "iPhone 15 的电池容量是 3349 mAh", "如何修改支付宝密码", "快递几天能到", "信用卡逾期怎么办", "借呗利息怎么算"]


def _docs(texts, prefix="d"):
    return [Doc(f"{prefix}{i}", t, {"n": i % 2}) for i, t in enumerate(texts)]


@pytest.fixture
def lex_index(tmp_path):
    return EmbedIndex.build(tmp_path / "lx", _docs(TEXTS), encoder=FakeEncoder(16), lexical=True)


def _fresh_scores(docs, query):
    bm = BM25Index().fit(np.arange(len(docs)), [d.text for d in docs])
    s = bm.get_scores(tokenize(query))
    return {d.id: float(v) for d, v in zip(docs, s) if v > 0}


def test_lexical_scores_equal_bm25s_and_follow_adds_and_deletes(lex_index, tmp_path):
    idx = lex_index
    idx.auto_compact = False
    hits = idx.search("借呗还款", 10, mode="lexical")[0]
    assert {h.id: pytest.approx(h.score, rel=1e-5) for h in hits} == _fresh_scores(_docs(TEXTS), "借呗还款")
    idx.add([Doc("new-1", "借呗还款日是哪天"), Doc("new-2", "花呗账单")])
    idx.delete(["d0", "new-2"])
    assert idx.manifest["index"]["segments"]
    for fresh in (idx, EmbedIndex.load(tmp_path / "lx", encoder=FakeEncoder(16))):
        got = {h.id for h in fresh.search("借呗 还款 花呗 账单", 20, mode="lexical")[0]}
        assert "new-1" in got and not {"d0", "new-2"} & got          # deletions never come back
    assert idx.compact() is True
    live = [d for d in _docs(TEXTS) if d.id != "d0"] + [Doc("new-1", "借呗还款日是哪天")]
    after = {h.id: h.score for h in idx.search("借呗还款", 20, mode="lexical")[0]}
    assert after == pytest.approx(_fresh_scores(live, "借呗还款"), rel=1e-5)   # exact bm25s after compaction
    assert idx.check() == []


def test_lexical_filters_empty_queries_and_mixed_text(lex_index):
    idx = lex_index
    assert idx.search("？！。，", 5, mode="lexical") == [[]]
    assert [h.id for h in idx.search("iphone 3349", 3, mode="lexical")[0]] == ["d5"]
    filtered = idx.search("借呗 花呗", 10, mode="lexical", filter={"n": 0})[0]
    assert filtered
    for h in filtered:
        assert h.metadata["n"] == 0


def test_hybrid_fuses_and_needs_the_lexical_part(lex_index, tmp_path):
    rows = lex_index.search(["借呗还款", "信用卡"], 4, mode="hybrid")
    assert all(len(r) == 4 for r in rows)
    assert all([h.score for h in r] == sorted((h.score for h in r), reverse=True) for r in rows)
    assert lex_index.manifest["fusion"]["method"] == "weighted"
    plain = EmbedIndex.build(tmp_path / "plain", _docs(TEXTS), encoder=FakeEncoder(16))
    with pytest.raises(InputError, match="no lexical part.*embedkit index lexical"):
        plain.search("借呗", 3, mode="lexical")
    with pytest.raises(InputError, match="mode 'sparse' is not one of dense, lexical, hybrid"):
        plain.search("借呗", 3, mode="sparse")
    plain.add_lexical()
    assert plain.search("借呗还款", 1, mode="lexical")[0][0].id in {"d0", "d2"}


def test_fusion_weight_is_tuned_on_pairs(tmp_path):
    """With random vectors the dense side is noise, so tuning must give the lexical side the weight."""
    pairs = tmp_path / "pairs.tsv"
    lines = (STS / "LCQMC" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:300]
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    idx = EmbedIndex.build(tmp_path / "t", _docs(TEXTS), encoder=FakeEncoder(16))
    idx.add_lexical(tune_pairs=pairs)
    f = idx.manifest["fusion"]
    assert f["tuned_on"] == str(pairs) and f["weight"] <= 0.3 and len(f["grid"]) == 11
    assert EmbedIndex.load(tmp_path / "t", encoder=FakeEncoder(16)).manifest["fusion"] == f
