"""The encoder against independent oracles: plain sentence-transformers and hand-pooled transformers
outputs (hidden_states[1] is the first transformer layer; hidden_states[0] is the embedding layer)."""

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from embedkit.encoder import Encoder
from embedkit.errors import InputError, ModelNotFoundError
from embedkit.models import resolve_model

from .conftest import M3E, TINY

TEXTS = ["今天天气不错", "明天会下雨吗？我要不要带伞出门", "我想办一张信用卡", "好",
         "这是一个比较长的句子，用来检查按长度排序的批处理会不会把原来的顺序打乱。"]


def test_model_pooling_equals_sentence_transformers(m3e_encoder):
    st = SentenceTransformer(str(M3E), device="cpu")
    st.max_seq_length = 64
    ref = st.encode(TEXTS, normalize_embeddings=True, batch_size=2)
    got = m3e_encoder.encode(TEXTS, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (5, 512) and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, atol=1e-5)


def _oracle(path, texts, pooling, max_length=64):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for t in texts:  # one at a time: no padding, so a plain mean is the masked mean
        f = tok(t, return_tensors="pt", truncation=True, max_length=max_length)
        with torch.no_grad():
            o = model(**f, output_hidden_states=True)
        hs = o.hidden_states
        v = {"cls": hs[-1][0, 0], "pooler": o.pooler_output[0], "last-avg": hs[-1][0].mean(0),
             "first-last-avg": (hs[1][0].mean(0) + hs[-1][0].mean(0)) / 2,
             "embedding-last-avg": (hs[0][0].mean(0) + hs[-1][0].mean(0)) / 2}[pooling]
        out.append(v.numpy())
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "last-avg", "first-last-avg"])
def test_paper_poolings_match_hand_pooled_oracle(pooling):
    enc = Encoder(str(TINY), pooling=pooling, batch_size=3)
    got = enc.encode(TEXTS, normalize=False)
    np.testing.assert_allclose(got, _oracle(str(TINY), TEXTS, pooling), atol=1e-4, rtol=1e-4)


def test_first_last_avg_uses_first_transformer_layer_not_embeddings():
    got = Encoder(str(TINY), pooling="first-last-avg").encode(TEXTS[:2], normalize=False)
    wrong = _oracle(str(TINY), TEXTS[:2], "embedding-last-avg")
    assert np.abs(got - wrong).max() > 1e-2


def test_order_restored_and_batch_independent(tiny_encoder):
    together = tiny_encoder.encode(TEXTS, batch_size=2)
    alone = np.stack([tiny_encoder.encode(t) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)


def test_max_length_truncates(tiny_encoder):
    long = "很长" * 200
    short = Encoder(str(TINY), max_length=8)
    assert not np.allclose(short.encode(long), tiny_encoder.encode(long))
    np.testing.assert_allclose(short.encode(long), short.encode(long + "再多一点"), atol=1e-6)


def test_shapes_and_bad_inputs(tiny_encoder):
    assert tiny_encoder.encode("单句").shape == (128,)
    assert tiny_encoder.encode([]).shape == (0, 128)
    with pytest.raises(InputError, match=r"item 1 is int"):
        tiny_encoder.encode(["好", 3])
    with pytest.raises(InputError, match="not bytes"):
        tiny_encoder.encode(b"\xff")
    with pytest.raises(InputError, match="pooling 'mean' is not one of"):
        Encoder(str(TINY), pooling="mean")
    with pytest.raises(InputError, match="max_length must be a positive integer, got 0"):
        Encoder(str(TINY), max_length=0)


def test_model_resolution(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("./no/such/model")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path / "notamodel")
    monkeypatch.setenv("EMBEDKIT_MODEL", str(TINY))
    assert resolve_model(None) == str(TINY.resolve())
    monkeypatch.delenv("EMBEDKIT_MODEL")
    assert resolve_model(None).endswith("m3e-small")  # the offline default
    assert resolve_model("BAAI/bge-small-zh-v1.5") == "BAAI/bge-small-zh-v1.5"  # hub ids pass through
