"""Hard negatives mined with an embedkit index (``embedkit finetune --hard-negatives``, issue 18): the negative
of each pair is the index's best text for the query that is not its positive (checked against an exact numpy
ranking of the same real vectors), it reaches sentence-transformers' trainer as a third column, and the
training card records where it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.cli import cli
from embedkit.corpus import Doc
from embedkit.errors import InputError
from embedkit.index import EmbedIndex
from embedkit.training.card import CARD_NAME
from embedkit.training.data import load_pairs
from embedkit.training.negatives import mine_hard_negatives

from .conftest import STS, TINY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus():
    """LCQMC positives as (query, positive) pairs; the index holds every positive and 200 other sentences."""
    with open(STS / "LCQMC" / "LCQMC.train.data", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()][:600]
    pairs = [(a, b) for a, b, y in rows if y == "1"][:80]
    others = list(dict.fromkeys(a for a, _, y in rows if y == "0"))[:200]
    texts = list(dict.fromkeys([b for _, b in pairs] + others))
    return pairs, texts


@pytest.fixture(scope="module")
def index_dir(corpus, tiny_encoder, tmp_path_factory):
    _, texts = corpus
    d = tmp_path_factory.mktemp("negatives") / "idx"
    EmbedIndex.build(d, [Doc(f"t{i}", t) for i, t in enumerate(texts)], encoder=tiny_encoder, index="flat")
    return d


def test_each_negative_is_the_best_text_that_is_not_the_positive(corpus, index_dir, tiny_encoder):
    pairs, texts = corpus
    tp = load_pairs([(q, p) for q, p in pairs], loss="mnrl")
    mined = mine_hard_negatives(tp, index_dir, k=10, skip=0)
    skipped = mine_hard_negatives(tp, index_dir, k=10, skip=1)
    idx = EmbedIndex.load(index_dir, encoder=tiny_encoder)
    scores = idx.embed([q for q, _ in pairs]) @ idx.embed(texts).T
    want, want_skip = [], []
    for i, (q, p) in enumerate(pairs):
        ranked = [texts[j] for j in np.argsort(-scores[i])[:10] if texts[j] not in (p, q)]
        want.append(ranked[0])
        want_skip.append(ranked[1])
    assert mined.sentences1 == [q for q, _ in pairs] and mined.negatives == want
    assert skipped.negatives == want_skip
    info = mined.extra["hard_negatives"]
    assert info["pairs_with_negative"] == len(pairs) and info["pairs_left_out"] == 0 and info["k"] == 10
    assert info["index_build_id"] == idx.manifest["build_id"]


def test_a_pair_whose_hits_are_only_its_positive_is_left_out(tiny_encoder, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    EmbedIndex.build(two, [Doc("a", "花呗怎么还款"), Doc("b", "今天天气很好")], encoder=tiny_encoder, index="flat")
    EmbedIndex.build(one, [Doc("a", "花呗怎么还款")], encoder=tiny_encoder, index="flat")
    tp = load_pairs([("花呗如何还款", "花呗怎么还款"), ("天气怎么样", "今天天气很好")], loss="mnrl")
    idx = EmbedIndex.load(two, encoder=tiny_encoder)
    top = [h[0].text for h in idx.search(tp.sentences1, 1)]
    keep = [i for i in range(2) if top[i] != tp.sentences2[i]]  # a pair whose top hit is its positive: no negative
    if keep:
        out = mine_hard_negatives(tp, two, k=1)
        assert out.sentences1 == [tp.sentences1[i] for i in keep] and out.negatives == [top[i] for i in keep]
        assert out.extra["hard_negatives"]["pairs_left_out"] == 2 - len(keep)
    else:
        with pytest.raises(InputError, match="no text other than the positive for any of the 2 queries in its top 1"):
            mine_hard_negatives(tp, two, k=1)
    assert mine_hard_negatives(tp, two, k=2).negatives == ["今天天气很好", "花呗怎么还款"]
    with pytest.raises(InputError, match="no text other than the positive"):
        mine_hard_negatives(load_pairs([("花呗", "花呗怎么还款")], loss="mnrl"), one, k=1)


def test_bad_hard_negative_settings_are_refused(index_dir, tmp_path):
    tp = load_pairs([("q", "p")], loss="mnrl")
    with pytest.raises(InputError, match=r"skip \(3\) must be below k \(3\)"):
        mine_hard_negatives(tp, index_dir, k=3, skip=3)
    with pytest.raises(InputError, match="k must be an integer >= 1, got 0"):
        mine_hard_negatives(tp, index_dir, k=0)
    with pytest.raises(InputError, match="not labelled pairs"):
        mine_hard_negatives(load_pairs([("a", "b", 1), ("c", "d", 0)]), index_dir)
    train = tmp_path / "t.tsv"
    train.write_text("".join(f"句子{i}\t句子{i + 1}\t{i % 2}\n" for i in range(40)), encoding="utf-8")
    r = CliRunner().invoke(cli, ["finetune", "--model", str(TINY), "--pairs", str(train), "-o", str(tmp_path / "m"),
                                 "--hard-negatives", str(index_dir), "--batch-size", "4", "--no-progress"])
    assert r.exit_code == 1 and "hard negatives are for --loss mnrl or cmnrl" in r.output, r.output
    assert not (tmp_path / "m").exists()


def test_finetune_with_hard_negatives_trains_on_triplets_and_records_them(corpus, index_dir, tmp_path):
    pairs, _ = corpus
    p = tmp_path / "qp.jsonl"
    p.write_text("".join(json.dumps({"query": q, "positive": t}, ensure_ascii=False) + "\n" for q, t in pairs),
                 encoding="utf-8")
    out = tmp_path / "tuned"
    r = CliRunner().invoke(cli, ["finetune", "--model", str(TINY), "--pairs", str(p), "--loss", "mnrl", "-o", str(out),
                                 "--hard-negatives", str(index_dir), "--max-steps", "2", "--batch-size", "16",
                                 "--valid-fraction", "0.25", "--keep-anyway", "--no-progress"])
    assert r.exit_code == 0, r.output
    card = json.loads((out / CARD_NAME).read_text(encoding="utf-8"))
    info = card["data"]["train"]["hard_negatives"]
    assert info["pairs_with_negative"] + info["pairs_left_out"] == card["data"]["train"]["n_pairs"] + \
        info["pairs_left_out"] == len(pairs) - round(0.25 * len(pairs))
    assert info["index"] == str(index_dir.resolve()) and len(info["sha256"]) == 64
    from embedkit.encoder import Encoder

    v = Encoder(str(out)).encode(["花呗怎么还款"])
    assert v.shape[0] == 1 and np.isfinite(v).all()
