"""Encoder runtimes: the registry, token usage from the encoder's own tokenisation, the OpenVINO and
static-int8 paths against the torch path, and no process-wide side effects from building an Encoder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from embedkit.encoder import Encoder
from embedkit.errors import InputError
from embedkit.runtimes import RUNTIME_NAMES, runtime_class
from embedkit.runtimes.torch_runtime import TorchRuntime

from .conftest import M3E, TINY

TEXTS = ["今天天气不错", "明天会下雨吗？我要不要带伞出门", "我想办一张信用卡", "好", "a",
         "这是一个比较长的句子，用来检查按长度排序的批处理会不会把原来的顺序打乱。" * 3]


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDKIT_ONNX_CACHE", str(tmp_path / "onnx-cache"))


class ScaledTorchRuntime(TorchRuntime):
    """A runtime from outside the registry (used by name 'tests.test_runtimes:ScaledTorchRuntime')."""

    name = "scaled"

    def pool(self, features, outputs):
        return 2 * super().pool(features, outputs)


# -- registry ----------------------------------------------------------------------------------------
def test_registry_names_and_errors():
    from embedkit import constants
    from embedkit.runtimes import RUNTIMES

    assert RUNTIME_NAMES == ("torch", "onnx", "onnx-int8", "onnx-int8-static", "openvino", "openvino-int8",
                             "torch-bf16", "openvino-bf16")
    assert tuple(RUNTIMES) == constants.RUNTIMES == RUNTIME_NAMES  # the CLI's choice list = the registry
    assert runtime_class("torch") is TorchRuntime
    with pytest.raises(InputError, match=r"backend 'onnx-fp16' is not one of torch, onnx, onnx-int8"):
        runtime_class("onnx-fp16")
    with pytest.raises(InputError, match=r"cannot import 'Nope' from 'embedkit.runtimes.torch_runtime'"):
        runtime_class("embedkit.runtimes.torch_runtime:Nope")
    with pytest.raises(InputError, match="backend must be a string"):
        runtime_class(3)


def test_runtime_given_as_module_and_class(tiny_encoder):
    enc = Encoder(str(TINY), backend="tests.test_runtimes:ScaledTorchRuntime")
    np.testing.assert_allclose(enc.encode(TEXTS, normalize=False), 2 * tiny_encoder.encode(TEXTS, normalize=False),
                               rtol=1e-5, atol=1e-6)


# -- token usage -------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_length", [64, 8])
def test_usage_counts_the_tokens_the_model_reads(max_length):
    enc = Encoder(str(TINY), max_length=max_length, batch_size=4)
    tok = AutoTokenizer.from_pretrained(str(TINY))
    oracle = [len(tok(t, truncation=True, max_length=max_length)["input_ids"]) for t in TEXTS]
    vecs, n = enc.encode_with_usage(TEXTS)
    assert n.dtype == np.int64 and n.tolist() == oracle  # per text, in input order
    np.testing.assert_array_equal(vecs, enc.encode(TEXTS))
    v1, n1 = enc.encode_with_usage("好")
    assert v1.shape == (enc.dim,) and isinstance(n1, int) and n1 == 3  # [CLS] 好 [SEP]
    v0, n0 = enc.encode_with_usage([])
    assert v0.shape == (0, enc.dim) and n0.shape == (0,)


# -- OpenVINO and static int8 against torch ----------------------------------------------------------
@pytest.mark.parametrize("pooling", ["model", "cls", "pooler", "first-last-avg"])
def test_openvino_matches_torch(onnx_cache, pooling):
    ref = Encoder(str(TINY), pooling=pooling).encode(TEXTS)
    enc = Encoder(str(TINY), pooling=pooling, backend="openvino")
    got, n = enc.encode_with_usage(TEXTS)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4
    np.testing.assert_array_equal(n, Encoder(str(TINY), pooling=pooling).encode_with_usage(TEXTS)[1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx-int8-static", "openvino-int8", "openvino"])
def test_m3e_fast_paths_close_to_torch(onnx_cache, m3e_encoder, backend):
    ref = m3e_encoder.encode(TEXTS)
    got = Encoder(str(M3E), backend=backend).encode(TEXTS)
    cos = (ref * got).sum(1)
    # fp32 OpenVINO equals torch; static int8 (7-bit weights, feed-forward down-projections in float)
    # measured min cosine 0.995 over 200 STS-B sentences on an AVX2 CPU without VNNI
    assert cos.min() > (0.9999 if backend == "openvino" else 0.95), cos


@pytest.mark.parametrize("backend", ["torch-bf16", "openvino-bf16"])
def test_m3e_bf16_runtimes_close_to_fp32_torch(onnx_cache, m3e_encoder, backend):
    ref = m3e_encoder.encode(TEXTS)
    enc = Encoder(str(M3E), backend=backend)
    got = enc.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == ref.shape
    # bf16 products with fp32 accumulation: measured min cosine 0.99998 over 2,000 LCQMC sentences
    assert (ref * got).sum(1).min() > 0.9995
    assert enc.describe()["backend"] == backend and enc.runtime.describe()["precision"] in ("bf16", "bf16-autocast")


def test_static_int8_graph_is_cached_and_reused(onnx_cache, monkeypatch):
    from embedkit.runtimes import calibration

    calls = []
    real = calibration.quantize_static_onnx
    monkeypatch.setattr(calibration, "quantize_static_onnx", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    e1 = Encoder(str(TINY), backend="onnx-int8-static")
    e2 = Encoder(str(TINY), backend="openvino-int8")
    assert len(calls) == 1 and e1.runtime.path == e2.runtime.path and e1.runtime.path.is_file()
    ref = Encoder(str(TINY)).encode(TEXTS)
    assert ((e1.encode(TEXTS) * ref).sum(1)).min() > 0.9
    assert ((e2.encode(TEXTS) * ref).sum(1)).min() > 0.9


def test_static_int8_graph_cannot_saturate_without_vnni(onnx_cache):
    """Checked on the graph, since only CPUs without VNNI show the error: every quantised weight fits
    7 bits (u8 x s8 pair sums stay within int16 in AVX2's vpmaddubsw) and the MatMuls fed by GELU
    (the feed-forward down-projections) stay float; every other MatMul is quantised."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(Encoder(str(TINY), backend="onnx-int8-static").runtime.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    weights = [inits[n.input[0]] for n in dequantize if n.input[0] in inits]
    assert weights and all(w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 64 for w in weights)
    dequantized = {n.output[0] for n in dequantize}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    quantised = {n.name for n in matmuls if n.input[1] in dequantized}
    down = {n.name for n in matmuls if "intermediate_act_fn" in producer[n.input[0]].name}
    assert down and len(down) == Encoder(str(TINY)).st[0].auto_model.config.num_hidden_layers
    assert quantised == {n.name for n in matmuls} - down


def test_missing_openvino_names_the_extra(monkeypatch):
    import builtins

    from embedkit.runtimes import openvino_runtime

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r"pip install 'embedkit\[openvino\]'"):
        openvino_runtime._require_openvino()


# -- threads and process state -----------------------------------------------------------------------
def test_threads_apply_to_the_runtime_only(tiny_encoder):
    before = torch.get_num_threads()
    enc = Encoder(str(TINY), threads=1)
    np.testing.assert_allclose(enc.encode(TEXTS), tiny_encoder.encode(TEXTS), atol=1e-6)
    assert torch.get_num_threads() == before
    with pytest.raises(InputError, match="threads must be a positive integer, got 0"):
        Encoder(str(TINY), threads=0)


LOGGERS = ("", "transformers", "sentence_transformers", "onnxruntime", "openvino")


@pytest.mark.parametrize("backend", ["torch", "onnx-int8", "openvino"])
def test_encoder_leaves_environment_and_loggers_alone(onnx_cache, backend):
    import sentence_transformers  # noqa: F401  (imported before the snapshot: its import is not ours)
    from transformers.utils import logging as hf_logging

    env = dict(os.environ)
    levels = {n: logging.getLogger(n).level for n in LOGGERS}
    verbosity = hf_logging.get_verbosity()
    enc = Encoder(str(TINY), backend=backend)
    enc.encode(TEXTS[:2])
    assert dict(os.environ) == env
    assert {n: logging.getLogger(n).level for n in LOGGERS} == levels
    assert hf_logging.get_verbosity() == verbosity


def test_local_model_loads_without_offline_env_and_sets_none(tmp_path):
    """A fresh process without HF_HUB_OFFLINE and an empty hub cache: the local directory loads
    (local_files_only), and HF_HUB_OFFLINE is still unset afterwards, so hub ids could download."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    code = ("import os; from embedkit.encoder import Encoder; "
            f"v = Encoder({str(TINY)!r}).encode(['你好']); "
            "print('OK', v.shape, os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK (1, 128) None None" in r.stdout
