"""The ONNX Runtime backends: same vectors as the torch path, usable int8, exports cached once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx  # noqa: F401  (installed by the dev extra; a missing one must fail, not skip)
import onnxruntime  # noqa: F401
import pytest

from embedkit.encoder import Encoder
from embedkit.errors import InputError
from embedkit.runtimes import onnx_export

from .conftest import M3E, TINY

SENTENCES = [
    "今天天气不错",
    "明天会下雨吗",
    "怎么开通信用卡",
    "信用卡怎么申请开通，需要带身份证吗？",
    "我想查询一下我的花呗账单",
    "这部电影的结局让人意想不到",
    "北京到上海的高铁票多少钱",
    "a",
    "“免费领取”饿了么红包",
    "为什么我的借呗额度突然没有了，之前一直都可以用的，现在显示暂时无法使用",
]


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    d = tmp_path / "onnx-cache"
    monkeypatch.setenv("EMBEDKIT_ONNX_CACHE", str(d))
    return d


def _pair(model, pooling, backend):
    ref = Encoder(str(model), pooling=pooling, device="cpu").encode(SENTENCES)
    got = Encoder(str(model), pooling=pooling, device="cpu", backend=backend).encode(SENTENCES)
    return ref, got


@pytest.mark.parametrize("pooling", ["model", "cls", "pooler", "last-avg", "first-last-avg"])
def test_tiny_onnx_matches_torch(onnx_cache, pooling):
    ref, got = _pair(TINY, pooling, "onnx")
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["model", "cls", "first-last-avg"])
def test_m3e_onnx_matches_torch(onnx_cache, pooling):
    ref, got = _pair(M3E, pooling, "onnx")
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.slow
def test_m3e_int8_close_to_fp32(onnx_cache):
    fp32 = Encoder(str(M3E), device="cpu", backend="onnx").encode(SENTENCES)
    int8 = Encoder(str(M3E), device="cpu", backend="onnx-int8").encode(SENTENCES)
    cos = (fp32 * int8).sum(1)
    assert cos.min() > 0.98, cos


@pytest.fixture()
def export_count(monkeypatch):
    """Counts the exports and quantisations this test performs (spies on the module's functions)."""
    counts = {"export": 0, "quantize": 0}

    def spy(fn, what):
        def wrapped(*a, **kw):
            counts[what] += 1
            return fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(onnx_export, "export_onnx", spy(onnx_export.export_onnx, "export"))
    monkeypatch.setattr(onnx_export, "quantize_onnx", spy(onnx_export.quantize_onnx, "quantize"))
    return counts


def test_export_cached_and_reused(onnx_cache, export_count):
    before = dict(export_count)
    e1 = Encoder(str(TINY), device="cpu", backend="onnx-int8")
    path = e1.runtime.path
    assert path.is_file() and str(path).startswith(str(onnx_cache))
    mtime = path.stat().st_mtime_ns
    assert export_count["export"] == before["export"] + 1
    assert export_count["quantize"] == before["quantize"] + 1

    e2 = Encoder(str(TINY), device="cpu", backend="onnx-int8")
    assert e2.runtime.path == path and path.stat().st_mtime_ns == mtime
    assert export_count == {"export": before["export"] + 1, "quantize": before["quantize"] + 1}
    np.testing.assert_array_equal(e1.encode(SENTENCES[:3]), e2.encode(SENTENCES[:3]))

    # fp32 reuses the graph exported for int8; another pooling needing other outputs exports anew
    e3 = Encoder(str(TINY), device="cpu", backend="onnx")
    assert export_count["export"] == before["export"] + 1
    assert e3.runtime.path != path
    Encoder(str(TINY), pooling="first-last-avg", device="cpu", backend="onnx")
    assert export_count["export"] == before["export"] + 2


def test_cache_key_separates_quantisation_and_opset(onnx_cache, monkeypatch):
    enc = Encoder(str(TINY), device="cpu")
    names = ("input_ids", "attention_mask", "token_type_ids")
    outs = ("last_hidden_state",)
    k_fp32 = onnx_export.cache_key(enc, outs, names, variant="fp32")
    k_int8 = onnx_export.cache_key(enc, outs, names, variant="int8-dynamic")
    assert k_fp32 != k_int8
    assert k_fp32 == onnx_export.cache_key(enc, outs, names, variant="fp32")
    monkeypatch.setattr(onnx_export, "OPSET", onnx_export.OPSET + 1)
    assert onnx_export.cache_key(enc, outs, names, variant="fp32") != k_fp32


def test_exports_go_to_the_user_cache_never_into_the_model_dir(tmp_path, monkeypatch):
    """A model folder is input: a writable copy of the model gets no onnx/ folder; the export lands in
    $XDG_CACHE_HOME/embedkit/onnx/<key>/ (issue 19: 290 MB appeared inside a shared model folder)."""
    import shutil

    monkeypatch.delenv("EMBEDKIT_ONNX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model_dir = tmp_path / "model"
    shutil.copytree(TINY, model_dir)
    os.chmod(model_dir, 0o755)
    before = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*"))
    assert onnx_export.cache_dir("k") == tmp_path / "xdg" / "embedkit" / "onnx" / "k"
    enc = Encoder(str(model_dir), device="cpu", backend="onnx")
    assert Path(enc.runtime.path).is_relative_to(tmp_path / "xdg" / "embedkit" / "onnx")
    assert Path(enc.runtime.path).is_file()
    assert sorted(p.relative_to(model_dir) for p in model_dir.rglob("*")) == before


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r"pip install 'embedkit\[onnx\]'"):
        onnx_export._require_onnxruntime()


def test_unknown_backend_is_an_input_error():
    with pytest.raises(InputError, match="backend"):
        Encoder(str(TINY), device="cpu", backend="onnx-fp16")
