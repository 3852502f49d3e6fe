"""``backend="auto"`` measures: the choice rule with injected numbers, the per-machine cache (written
once, reused, invalidated by a changed key, never trusting a corrupt or foreign entry), failures during
measurement, and a real measurement of every installed runtime on the tiny model."""

from __future__ import annotations

import json
import logging

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from embedkit.encoder import Encoder
from embedkit.errors import InputError
from embedkit.runtimes import measure as meas
from embedkit.runtimes.measure import COSINE_FLOOR, Decision, Measurement, choose

from .conftest import TINY

TEXTS = ["今天天气不错", "明天会下雨吗？我要不要带伞出门", "我想办一张信用卡", "好", "a"]


@pytest.fixture()
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("EMBEDKIT_ONNX_CACHE", str(tmp_path / "onnx"))
    return tmp_path / "xdg" / "embedkit" / "runtimes"


def M(name, speed, delta=0.0, cos=1.0, skipped=None):  # noqa: N802 - a table row
    return Measurement(name, speed, cos, None if delta is None else 30.0 + delta, delta, 0.1, skipped)


# -- the rule ------------------------------------------------------------------------------------------
def test_fastest_within_the_bound_wins():
    table = [M("torch", 100), M("onnx", 150), M("onnx-int8", 300, delta=-0.8), M("openvino", 180, delta=+0.4)]
    assert choose(table, 0.5) == "openvino"  # onnx-int8 is faster but 0.8 points off
    assert choose(table, 1.0) == "onnx-int8"
    assert choose(table, 0.0) == "onnx"  # exact ones only (delta 0)


def test_cosine_floor_ties_and_failures():
    assert choose([M("torch", 100), M("openvino-int8", 500, cos=COSINE_FLOOR - 0.01)]) == "torch"
    assert choose([M("torch", 100), M("onnx", 200), M("openvino", 200)]) == "onnx"  # a tie: the earlier name
    everything_failed = [M("torch", 100), M("onnx", None, None, None, "ImportError: onnxruntime"),
                         M("openvino", 80.0, None, None, "slower than 1/3 of torch: cut short"),
                         M("onnx-int8", 900, skipped="RuntimeError: boom")]  # numbers, but skipped
    assert choose(everything_failed) == "torch"
    assert choose([]) == "torch"


# -- the cache -----------------------------------------------------------------------------------------
class Counting:
    """Stands in for meas.measure: returns a fixed decision and counts the calls."""

    def __init__(self, choice="torch"):
        self.calls, self.choice = 0, choice

    def __call__(self, encoder, names, *, bound):
        from embedkit.runtimes import runtime_class

        self.calls += 1
        table = [M(n, 100.0 + i) for i, n in enumerate(names)]
        return Decision(self.choice, bound, table, measured_at="now"), {self.choice: runtime_class(self.choice)(encoder)}


def test_cache_written_once_reused_and_keyed(caches, tiny_encoder, monkeypatch):
    fake = Counting()
    monkeypatch.setattr(meas, "measure", fake)
    rt, d = meas.auto_runtime(tiny_encoder)
    assert fake.calls == 1 and not d.cached and rt.name == "torch"
    files = list(caches.glob("*.json"))
    assert len(files) == 1 and d.path == str(files[0])
    saved = json.loads(files[0].read_text())
    assert saved["key"]["cpu"] and saved["key"]["model_fingerprint"] and saved["key"]["threads"] >= 1
    assert {"torch", "sentence-transformers"} <= set(saved["key"]["libraries"])

    _, d2 = meas.auto_runtime(tiny_encoder)  # reused, not measured
    assert fake.calls == 1 and d2.cached and d2.choice == "torch" and len(d2.measurements) == len(d.measurements)

    meas.auto_runtime(tiny_encoder, bound=0.3)  # another bound is another key
    assert fake.calls == 2
    from embedkit.runtimes import hardware

    real = hardware.cpu_identity()
    monkeypatch.setattr(hardware, "cpu_identity", lambda: {**real, "cpu_flags": ["avx2"]})  # another CPU
    meas.auto_runtime(tiny_encoder)
    assert fake.calls == 3 and len(list(caches.glob("*.json"))) == 3


def test_corrupt_or_foreign_cache_entries_are_measured_again(caches, tiny_encoder, monkeypatch, caplog):
    fake = Counting()
    monkeypatch.setattr(meas, "measure", fake)
    _, d = meas.auto_runtime(tiny_encoder)
    path = caches / d.path.rsplit("/", 1)[1]
    for bad in (b"{not json", b"\xff\xfe", json.dumps({"choice": "onnx"}).encode(),
                json.dumps({**json.loads(path.read_text()), "key": {"cpu": "another"}}).encode()):
        good = path.read_bytes()
        path.write_bytes(bad)
        before = fake.calls
        with caplog.at_level(logging.WARNING, logger="embedkit.runtimes.measure"):
            _, d = meas.auto_runtime(tiny_encoder)
        assert fake.calls == before + 1 and not d.cached, bad
        assert "ignoring the cached measurement" in caplog.text
        assert json.loads(path.read_text())["key"] == json.loads(good)["key"]  # rewritten, valid again
        caplog.clear()


def test_cached_choice_that_no_longer_builds_falls_back(caches, tiny_encoder, monkeypatch, caplog):
    from embedkit.runtimes import openvino_runtime

    fake = Counting(choice="torch")
    monkeypatch.setattr(meas, "measure", fake)
    _, d = meas.auto_runtime(tiny_encoder, candidates=["torch", "onnx", "openvino"])
    data = json.loads(open(d.path).read())
    data["choice"] = "openvino"
    for row in data["measurements"]:
        row["sentences_per_s"] = {"torch": 100.0, "onnx": 200.0, "openvino": 300.0}[row["name"]]
    open(d.path, "w").write(json.dumps(data))

    def fail(self, encoder):
        raise RuntimeError("cannot compile this graph")

    monkeypatch.setattr(openvino_runtime.OpenVINORuntime, "__init__", fail)
    with caplog.at_level(logging.WARNING, logger="embedkit.runtimes.measure"):
        rt, d2 = meas.auto_runtime(tiny_encoder, candidates=["torch", "onnx", "openvino"])
    assert d2.cached and rt.name == "onnx" == d2.choice and fake.calls == 1
    assert "openvino cannot be built now" in caplog.text and "cannot compile this graph" in caplog.text


def test_bound_is_validated(caches, tiny_encoder):
    for bad in (-1, 100, "0.5", True, float("nan")):
        with pytest.raises(InputError, match="auto_bound must be a number of Spearman points"):
            meas.auto_runtime(tiny_encoder, bound=bad)


# -- real measurements ---------------------------------------------------------------------------------
def test_auto_measures_every_installed_runtime_and_caches_the_choice(caches, tiny_encoder, monkeypatch):
    # No runtime is cut short for slowness here: on a loaded machine a warm-up can pass the cut by jitter
    # alone, and this test is about measuring them all (the cut has its own test, next).
    monkeypatch.setattr(meas, "SLOW_CUT", 1e9)
    enc = Encoder(str(TINY), backend="auto")
    d = enc.auto_decision
    assert enc.backend == "auto" and not d.cached  # the parameter is kept; the choice is the runtime's name
    assert [m.name for m in d.measurements] == meas.candidates_for("cpu")
    by = {m.name: m for m in d.measurements}
    assert by["torch"].delta == 0 and by["torch"].min_cosine == pytest.approx(1.0, abs=1e-5)
    measured = [m for m in d.measurements if m.skipped is None]
    assert {"torch", "onnx", "openvino"} <= {m.name for m in measured}
    assert all(m.sentences_per_s > 0 and m.min_cosine is not None for m in measured)
    assert by["onnx"].min_cosine > 0.9999 and abs(by["onnx"].delta) < 0.01  # fp32 graphs: the same vectors
    chosen = by[d.choice]
    assert chosen.qualifies(0.5)
    assert chosen.sentences_per_s == max(m.sentences_per_s for m in measured if m.qualifies(0.5))
    assert enc.runtime_name == d.choice == enc.describe()["backend"]
    got, ref = enc.encode(TEXTS), tiny_encoder.encode(TEXTS)
    assert (got * ref).sum(1).min() >= COSINE_FLOOR
    again = Encoder(str(TINY), backend="auto")
    assert again.auto_decision.cached and again.runtime_name == d.choice


def test_a_runtime_slower_than_the_cut_is_cut_short_and_cannot_win(caches, tiny_encoder, monkeypatch):
    monkeypatch.setattr(meas, "SLOW_CUT", 1e-9)  # every warm-up is over the limit
    d, built = meas.measure(tiny_encoder, ["torch", "onnx", "openvino"])
    by = {m.name: m for m in d.measurements}
    assert by["onnx"].skipped == by["openvino"].skipped == "slower than 1/1e-09 of torch: cut short"
    assert d.choice == "torch" and list(built) == ["torch"] and by["torch"].skipped is None


def test_a_runtime_that_fails_while_measured_is_skipped(caches, tiny_encoder, monkeypatch):
    from embedkit.runtimes import onnx_runtime

    def fail(self, encoder):
        raise RuntimeError("unsupported op\nsecond line")

    monkeypatch.setattr(onnx_runtime.OnnxRuntime, "__init__", fail)
    d, built = meas.measure(tiny_encoder, ["torch", "onnx", "openvino"])
    by = {m.name: m for m in d.measurements}
    assert by["onnx"].skipped == "RuntimeError: unsupported op" and by["onnx"].sentences_per_s is None
    assert by["openvino"].skipped is None and d.choice in ("torch", "openvino") and list(built) == [d.choice]


def test_measuring_torch_bf16_leaves_the_model_in_fp32(caches, monkeypatch):
    enc = Encoder(str(TINY))
    before = enc.encode(TEXTS)
    monkeypatch.setattr(meas, "native_bf16", lambda name, device: True)  # measure it even without bf16 here
    d, _ = meas.measure(enc, ["torch", "torch-bf16"], keep=False)
    assert {m.name: m for m in d.measurements}["torch-bf16"].skipped in (None, "slower than 1/3 of torch: cut short")
    assert all(p.dtype == torch.float32 for p in enc.st.parameters())
    np.testing.assert_array_equal(enc.encode(TEXTS), before)


def test_an_explicit_backend_is_never_measured(monkeypatch):
    from embedkit.cli.options import backend_option

    def boom(*a, **kw):
        raise AssertionError("measured although a runtime was named")

    monkeypatch.setattr(meas, "auto_runtime", boom)
    enc = Encoder(str(TINY), backend="torch")
    assert enc.runtime_name == "torch" and enc.auto_decision is None

    @click.command()
    @backend_option()
    def show(backend):
        click.echo(backend)

    runner = CliRunner()
    assert runner.invoke(show, [], env={"EMBEDKIT_RUNTIME": "onnx-int8"}).output.strip() == "onnx-int8"
    assert runner.invoke(show, ["--backend", "openvino"], env={"EMBEDKIT_RUNTIME": "onnx-int8"}).output.strip() == "openvino"
    assert runner.invoke(show, [], env={"EMBEDKIT_RUNTIME": "fast"}).exit_code == 2


def test_runtimes_command_prints_the_table(caches):
    from embedkit.cli import cli

    r = CliRunner().invoke(cli, ["runtimes", "-m", str(TINY), "--only", "onnx", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output.strip().splitlines()[-1])
    assert [m["name"] for m in d["measurements"]] == ["torch", "onnx"] and d["choice"] in ("torch", "onnx")
    r = CliRunner().invoke(cli, ["runtimes", "-m", str(TINY), "--only", "onnx"])
    assert r.exit_code == 0 and "(cached;" in r.output and "sentences/s" in r.output
    r = CliRunner().invoke(cli, ["runtimes", "-m", str(TINY), "--only", "onnx", "--remeasure"])
    assert r.exit_code == 0 and "measured in" in r.output
