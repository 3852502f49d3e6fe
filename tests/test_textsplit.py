"""Passage splitting on the real m3e-small tokenizer: every passage fits the window in the model's own
tokens, passages tile the text in order (or overlap by the stated tokens), Chinese sentence ends are
preferred, hostile texts split without error. Random texts come from hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedkit.errors import InputError
from embedkit.textsplit import PassageSplitter

from .conftest import M3E

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(M3E))


def _bound(tokenizer, **kw):
    """A splitter without overlap unless asked (passages then tile the text)."""
    kw.setdefault("overlap", 0)
    return PassageSplitter(**kw).bind(tokenizer, MAX_LENGTH)


def _model_tokens(tokenizer, text: str) -> int:
    """Tokens the model reads for ``text``, special tokens included, untruncated."""
    return len(tokenizer(text, truncation=False)["input_ids"])


def _check_tiling(text, spans):
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(s < e for s, e in spans)
    assert "".join(text[s:e] for s, e in spans) == text  # nothing lost, nothing repeated, in order


SENTENCES = ["今天上海的天气晴朗，气温二十度左右。", "你知道长城有多长吗？", "这家店的小笼包真好吃！",
             "花呗的还款日是每月九号；逾期会产生罚息。", "He said: this is fine! ", "def f(x): return x * 2\n"]


def test_defaults_window_less_special_tokens_and_half_overlap(tokenizer):
    sp = PassageSplitter().bind(tokenizer, MAX_LENGTH)
    assert sp.max_tokens_ == MAX_LENGTH - 2  # [CLS] and [SEP]
    assert sp.overlap is None and sp.overlap_ == 31  # half the window, measured on CMRC 2018 trial
    assert sp.describe() == {"mode": "passages", "max_tokens": 62, "overlap": 31, "library": "semantic-text-splitter",
                             "version": sp.describe()["version"]}
    assert PassageSplitter(max_tokens=20).bind(tokenizer, MAX_LENGTH).overlap_ == 10


def test_every_passage_fits_and_the_passages_tile_the_text(tokenizer):
    sp = _bound(tokenizer)
    text = "".join(SENTENCES[i % len(SENTENCES)] for i in range(80))
    spans = sp.spans(text)
    assert len(spans) > 5
    _check_tiling(text, spans)
    assert max(_model_tokens(tokenizer, text[s:e]) for s, e in spans) <= MAX_LENGTH


def test_chinese_sentence_ends_are_preferred(tokenizer):
    sp = _bound(tokenizer)
    # 200 sentences, about 5,600 characters: longer than one block of the splitter (textsplit.BLOCK)
    sents = [f"第{i}句话讲的是一个比较长的故事，里面有很多细节和人物。" for i in range(200)]
    text = "".join(sents)
    spans = sp.spans(text)
    # every cut falls right after a sentence end, never inside a sentence
    for s, e in spans[:-1]:
        assert text[e - 1] in "。！？", text[s:e]
    # and passages are filled: each holds as many whole sentences as fit (here 2 of ~26 tokens)
    assert len(spans) <= len(sents) // 2 + 1


def test_overlap_repeats_the_end_of_the_previous_passage(tokenizer):
    sp = _bound(tokenizer, overlap=16)
    text = "".join(f"第{i}句话讲的是一个故事。" for i in range(60))
    spans = sp.spans(text)
    assert len(spans) > 3
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < s1 < e0 < e1 or s1 == e0  # overlapping (or adjacent), in order
        shared = text[s1:e0]
        assert _model_tokens(tokenizer, shared) - 2 <= 16
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    assert covered == set(range(len(text)))
    assert max(_model_tokens(tokenizer, text[s:e]) for s, e in spans) <= MAX_LENGTH


@pytest.mark.parametrize("text", [
    "。。。！！？？", "   \n\t  ", "a" * 100_000, "中" * 100_000, "龘" * 3000 + "\n" * 500 + "x",
    "混合 mixed 文本 with `code()` 和 emoji 😀 以及 ﬁ ligatures。" * 50, "\n".join(["行"] * 2000),
])
def test_hostile_texts_split_without_error(tokenizer, text):
    sp = _bound(tokenizer)
    spans = sp.spans(text)
    _check_tiling(text, spans)
    assert max(_model_tokens(tokenizer, text[s:e]) for s, e in spans) <= MAX_LENGTH


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("天气很好我们去公园散步吧。！？；，、,.!? \nabcXYZ0123😀")), max_size=2000))
def test_random_texts_tile_and_fit(tokenizer, text):
    sp = _bound(tokenizer)
    spans = sp.spans(text)
    if not text:
        assert spans == [(0, 0)]
        return
    _check_tiling(text, spans)
    assert max(_model_tokens(tokenizer, text[s:e]) for s, e in spans) <= MAX_LENGTH


@pytest.mark.parametrize("kw, match", [
    ({"mode": "chunks"}, "split mode 'chunks' is not one of passages, truncate"),
    ({"max_tokens": 0}, "max_tokens must be a positive integer, got 0"),
    ({"max_tokens": 63}, "max_tokens 63 exceeds the encoder's window of 62"),
    ({"overlap": -1}, "overlap must be a non-negative integer, got -1"),
    ({"max_tokens": 10, "overlap": 10}, "overlap 10 must be smaller than max_tokens 10"),
])
def test_bad_parameters_are_named(tokenizer, kw, match):
    sp = PassageSplitter(**kw)
    assert sp.mode == kw.get("mode", "passages")  # __init__ stores, bind validates
    with pytest.raises(InputError, match=match):
        sp.bind(tokenizer, MAX_LENGTH)


def test_truncate_mode_reads_the_text_whole_and_counts_tokens(tokenizer):
    sp = _bound(tokenizer, mode="truncate")
    text = "很长的文本。" * 50
    assert sp.spans(text) == [(0, len(text))]
    assert sp.token_counts([text, "短"]) == [len(tokenizer(text, add_special_tokens=False)["input_ids"]), 1]
