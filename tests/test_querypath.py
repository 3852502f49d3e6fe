"""The query path rebuilt from the manifest: text stage, encoder, reducer, metric; lazy model loading."""

import numpy as np
import pytest

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex

from .conftest import FakeEncoder


def test_traditional_queries_find_simplified_documents_through_t2s(tmp_path):
    docs = [Doc("a", "信用卡额度怎么提高"), Doc("b", "快递几天能到"), Doc("c", "借呗如何还款")]
    idx = EmbedIndex.build(tmp_path / "n", docs, encoder=FakeEncoder(16), normalize="t2s")
    assert idx.manifest["normalize"] == "t2s"
    top = idx.search("信用卡額度怎麼提高", 1)[0][0]       # Traditional query, Simplified document
    assert top.id == "a" and top.score == pytest.approx(1.0, abs=1e-6)
    again = EmbedIndex.load(tmp_path / "n", encoder=FakeEncoder(16))
    assert again.query_path.describe()["normalize"] == "t2s"
    np.testing.assert_array_equal(again.embed(["快遞幾天能到"]), idx.embed(["快递几天能到"]))
    plain = EmbedIndex.build(tmp_path / "p", docs, encoder=FakeEncoder(16))
    assert plain.search("信用卡額度怎麼提高", 1)[0][0].score < 0.99


def test_two_halves_equal_embed_and_no_model_is_loaded_for_delete(tmp_path):
    idx = EmbedIndex.build(tmp_path / "h", [Doc(str(i), f"文本 {i}") for i in range(40)], encoder=FakeEncoder(16),
                           reduce="pca:8")
    qp = idx.query_path
    texts = ["查询一", "查询二"]
    np.testing.assert_array_equal(qp.project(qp.encode_raw(texts)), idx.embed(texts))
    reopened = EmbedIndex.load(tmp_path / "h")     # the manifest's model is "fake": loading it would fail
    assert reopened.delete(["3"]) == 1 and not reopened.query_path.encoder_loaded
    assert len(EmbedIndex.load(tmp_path / "h")) == 39


def test_auto_reducer_in_a_build_chooses_on_tuning_pairs_and_records_the_grid(tmp_path):
    """--reduce auto needs --tune-pairs; with them the choice and grid are in the manifest."""
    from embedkit.errors import InputError

    from .conftest import STS

    docs = [Doc(str(i), f"文本 {i}") for i in range(300)]
    with pytest.raises(InputError, match="--tune-pairs FILE"):
        EmbedIndex.build(tmp_path / "a", docs, encoder=FakeEncoder(16), reduce="auto")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join((STS / "LCQMC" / "LCQMC.valid.data").read_text(encoding="utf-8").splitlines()[:200])
                     + "\n", encoding="utf-8")
    idx = EmbedIndex.build(tmp_path / "b", docs, encoder=FakeEncoder(16), reduce="auto", tune_pairs=pairs)
    r = idx.manifest["reducer"]
    assert r["spec"].startswith("auto") and r["tuned_on"] == str(pairs) and r["auto"]["grid"]
    assert r["auto"]["choice"] in [g["spec"] for g in r["auto"]["grid"]]
    again = EmbedIndex.load(tmp_path / "b", encoder=FakeEncoder(16))
    np.testing.assert_array_equal(again.embed(["查询"]), idx.embed(["查询"]))
