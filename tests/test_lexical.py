"""The BM25 lexical index: Chinese tokenisation, scores checked against bm25s directly, adds and
deletes, persistence and bad input."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest

from embedkit.errors import IndexFormatError, InputError, NotFittedError
from embedkit.evaluation.data import load_task
from embedkit.lexical import BM25Index, tokenize, tokenize_many

from .conftest import STS


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    ps = load_task(STS, "STS-B", ["test"], limit=120)["test"]
    return list(dict.fromkeys(ps.sentences2))


@pytest.fixture(scope="module")
def queries(corpus) -> list[str]:
    ps = load_task(STS, "STS-B", ["test"], limit=120)["test"]
    return list(dict.fromkeys(ps.sentences1))[:25] + [corpus[3], "一个男人在弹吉他"]


def _oracle(docs_tokens: list[list[str]], query: list[str], k: int, method="lucene", k1=1.5, b=0.75):
    """bm25s used directly: every positive score, best first (ties by document order)."""
    bm = bm25s.BM25(k1=k1, b=b, method=method)
    bm.index(docs_tokens, show_progress=False)
    s = bm.get_scores(query) if any(t in bm.vocab_dict for t in query) else np.zeros(len(docs_tokens))
    rows = [i for i in np.lexsort((np.arange(len(s)), -s)) if s[i] > 0][:k]
    return [(float(s[i]), i) for i in rows]


def test_tokenize_mixed_chinese_english_numbers():
    toks = tokenize("iPhone 15 Pro多少钱？我在ABC银行存了3000元!!")
    assert "iphone" in toks and "pro" in toks and "abc" in toks
    assert "15" in toks and "3000" in toks
    assert "多少" in toks and "银行" in toks
    assert all(t == t.strip() and any(c.isalnum() for c in t) for t in toks)
    assert all(not any("A" <= c <= "Z" for c in t) for t in toks)
    assert tokenize("？！，。 ... ——") == []
    assert tokenize("") == []
    assert tokenize_many(["借呗", "!!"]) == [tokenize("借呗"), []]
    with pytest.raises(InputError, match="must be str"):
        tokenize(b"bytes")


@pytest.mark.parametrize("method", ["lucene", "robertson"])
def test_scores_match_bm25s(corpus, queries, method):
    toks = tokenize_many(corpus)
    bm = BM25Index(method=method).fit(list(range(100, 100 + len(corpus))), corpus)
    res = bm.search(queries, k=7)
    nonempty = 0
    for q, hits in zip(queries, res):
        want = _oracle(toks, tokenize(q), 7, method=method)
        assert [i + 100 for _, i in want] == [i for _, i in hits]
        np.testing.assert_allclose([s for s, _ in hits], [s for s, _ in want], rtol=1e-6)
        nonempty += bool(hits)
    assert nonempty >= len(queries) - 2
    # a corpus sentence finds itself first
    assert res[-2][0][1] == 103


def test_token_lists_and_texts_give_the_same_index(corpus, queries):
    a = BM25Index().fit(range(len(corpus)), corpus)
    b = BM25Index().fit(range(len(corpus)), tokenize_many(corpus))
    assert a.search(queries, k=5) == b.search(queries, k=5)
    assert b.search([tokenize(q) for q in queries], k=5) == a.search(queries, k=5)


def test_empty_and_unknown_queries_return_no_hits(corpus):
    bm = BM25Index().fit(range(len(corpus)), corpus)
    assert bm.search(["？？！", "", "zzzqqq 𠀀"], k=5) == [[], [], []]


def test_add_delete_follow_changes_and_deleted_never_return(corpus, queries):
    n = len(corpus)
    with pytest.raises(InputError, match="ids for"):
        BM25Index().fit(range(n), corpus[:-10])
    bm = BM25Index().fit(range(n - 10), corpus[:-10])
    bm.add(range(n - 10, n), corpus[-10:])
    assert bm.stale
    gone = [3, 5, n - 1]
    bm.delete(gone)
    live = [i for i in range(n) if i not in gone]
    toks = tokenize_many(corpus)
    for q in queries + [corpus[i] for i in gone]:
        hits = bm.search([q], k=len(corpus))[0]
        assert not {i for _, i in hits} & set(gone)
        want = _oracle([toks[i] for i in live], tokenize(q), len(corpus))
        assert [live[i] for _, i in want] == [i for _, i in hits]
        np.testing.assert_allclose([s for s, _ in hits], [s for s, _ in want], rtol=1e-6)
    assert len(bm) == n - 3 and not bm.stale
    assert bm.tokens(n - 2) == toks[n - 2]
    with pytest.raises(InputError, match="not in the lexical index"):
        bm.delete([3])
    with pytest.raises(InputError, match="already in the lexical index"):
        bm.add([0], ["重复的编号"])
    with pytest.raises(InputError, match="duplicate id"):
        bm.add([9000, 9000], ["一", "二"])
    bm.add([3], [corpus[3]])  # a deleted id can be reused
    assert bm.search([corpus[3]], k=1)[0][0][1] == 3


def test_allowed_ids(corpus):
    bm = BM25Index().fit(range(len(corpus)), corpus)
    allowed = {1, 2, 7}
    for hits in bm.search([corpus[0], corpus[7]], k=10, allowed_ids=allowed):
        assert {i for _, i in hits} <= allowed
    assert bm.search([corpus[0]], k=3, allowed_ids=[]) == [[]]


def test_save_load_identical(tmp_path, corpus, queries):
    bm = BM25Index(k1=1.2, b=0.7).fit(range(len(corpus)), corpus)
    bm.delete([0, 1])
    bm.save(tmp_path / "lex")
    bm.save(tmp_path / "lex")  # overwrite: one generation remains
    assert len(list((tmp_path / "lex").glob("bm25-*"))) == 1
    b2 = BM25Index.load(tmp_path / "lex")
    assert (b2.k1, b2.b, b2.method) == (1.2, 0.7, "lucene")
    assert b2.search(queries, k=10) == bm.search(queries, k=10)
    b2.add([0], [corpus[0]])
    assert b2.search([corpus[0]], k=1)[0][0][1] == 0


def test_load_errors(tmp_path, corpus):
    with pytest.raises(IndexFormatError, match="missing"):
        BM25Index.load(tmp_path / "nothing")
    bm = BM25Index().fit(range(len(corpus)), corpus)
    bm.save(tmp_path / "lex")
    gen = next((tmp_path / "lex").glob("bm25-*"))
    (gen / "tokens.npz").write_bytes(b"not a zip")
    with pytest.raises(IndexFormatError, match="corrupt"):
        BM25Index.load(tmp_path / "lex")
    (tmp_path / "lex" / "bm25.json").write_text("{", encoding="utf-8")
    with pytest.raises(IndexFormatError, match="corrupt"):
        BM25Index.load(tmp_path / "lex")


def test_bad_input(corpus):
    with pytest.raises(NotFittedError):
        BM25Index().search(["x"], k=1)
    with pytest.raises(InputError, match="method"):
        BM25Index(method="bm42").fit([1], ["借呗"])
    with pytest.raises(InputError, match="b must be"):
        BM25Index(b=2).fit([1], ["借呗"])
    bm = BM25Index().fit(range(len(corpus)), corpus)
    for k in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="k must be a positive integer"):
            bm.search(["借呗"], k=k)
    with pytest.raises(InputError, match="wrap it in a list"):
        bm.search("借呗", k=1)
    with pytest.raises(InputError, match="texts must be str|all texts"):
        bm.search([None], k=1)
    with pytest.raises(InputError, match="integers"):
        BM25Index().fit(["a", "b"], ["一", "二"])
    with pytest.raises(InputError, match="no ids"):
        bm.delete([])


def test_documents_without_words():
    bm = BM25Index().fit([1, 2], ["！！", "？"])
    assert bm.search(["借呗"], k=3) == [[]]
    bm.add([3], ["借呗还款"])
    assert [i for _, i in bm.search(["借呗"], k=3)[0]] == [3]
