"""``embedkit finetune`` (issue 18): bad input refused before training, real short runs on tiny-random-bert-zh
and m3e-small, the guard, the training card, and resume after SIGKILL reaching the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.cli import cli
from embedkit.errors import InputError
from embedkit.training import GuardError, finetune
from embedkit.training.card import CARD_NAME

from .conftest import M3E, STS, TINY

LCQMC = STS / "LCQMC"


def _rows(split: str, n: int, start: int = 0) -> list[str]:
    with open(LCQMC / f"LCQMC.{split}.data", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    return lines[start:start + n]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def _run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- bad input: clear errors before any training ---------------------------------------------------------
def _expect(match: str, train, tmp_path, base=TINY, **kw):
    kw.setdefault("batch_size", 4)
    with pytest.raises(InputError, match=match):
        finetune(base, train, out_dir=tmp_path / "out", progress=False, **kw)
    assert not (tmp_path / "out").exists()


def test_one_class_only_is_refused(tmp_path):
    rows = [("我想开通信用卡", f"信用卡怎么办理{i}", 1) for i in range(40)]
    _expect("one class only", rows, tmp_path)


def test_labels_outside_the_scale_are_refused(tmp_path):
    rows = [("我想开通信用卡", f"信用卡怎么办理{i}", i % 6) for i in range(40)]
    _expect(r"labels outside the scale 0:1 .*--label-scale", rows, tmp_path)


def test_fewer_pairs_than_a_batch_are_refused(tmp_path):
    p = _write(tmp_path / "few.tsv", _rows("train", 20))
    _expect(r"fewer than one batch \(32\)", p, tmp_path, batch_size=32, valid_fraction=0.2)


def test_empty_sentence_names_file_and_line(tmp_path):
    rows = _rows("train", 30)
    rows[6] = "\t" + rows[6].split("\t", 1)[1]
    p = _write(tmp_path / "empty.tsv", rows)
    _expect(r"empty\.tsv:7: empty sentence", p, tmp_path)


def test_non_utf8_file_names_file_and_line(tmp_path):
    p = tmp_path / "gbk.tsv"
    p.write_bytes(("\n".join(_rows("train", 5)) + "\n").encode() + "坏行\t好\t1\n".encode("gbk"))
    _expect(r"gbk\.tsv' is not UTF-8 \(bad byte at line 6", p, tmp_path)


def test_malformed_row_and_missing_file(tmp_path):
    rows = _rows("train", 30)
    rows[2] = "只有一列"
    _expect(r"bad\.tsv:3: not sentence1<TAB>sentence2<TAB>label", _write(tmp_path / "bad.tsv", rows), tmp_path)
    _expect("does not exist", tmp_path / "nope.tsv", tmp_path)


def test_mnrl_rows_must_have_two_fields(tmp_path):
    p = _write(tmp_path / "q.tsv", ["问题一\t段落一", "问题二\t段落二\t多余\t列"])
    _expect(r"q\.tsv:2: expected query<TAB>relevant text", p, tmp_path, loss="mnrl")


def test_base_model_that_is_not_a_sentence_encoder(tmp_path):
    train = _write(tmp_path / "t.tsv", _rows("train", 40))
    (tmp_path / "nocfg").mkdir()
    _expect("no config.json", train, tmp_path, base=tmp_path / "nocfg")
    bad = tmp_path / "badcfg"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "no-such-architecture"}', encoding="utf-8")
    _expect("could not be loaded as a sentence encoder", train, tmp_path, base=bad)


def test_existing_output_and_step_settings(tmp_path):
    train = _write(tmp_path / "t.tsv", _rows("train", 40))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep me", encoding="utf-8")
    with pytest.raises(InputError, match="not empty; pass --overwrite"):
        finetune(TINY, train, out_dir=tmp_path / "out", batch_size=4, progress=False)
    assert (tmp_path / "out" / "x").read_text(encoding="utf-8") == "keep me"
    _expect("must be a multiple of eval steps", train, tmp_path / "sub", eval_steps=3, save_steps=4)


def test_cli_reports_bad_input_with_exit_1(tmp_path):
    rows = [f"句子{i}\t句子{i + 1}\t2" for i in range(40)]
    r = _run_cli("finetune", "-m", TINY, "--pairs", _write(tmp_path / "p.tsv", rows), "-o", tmp_path / "o",
                 "--batch-size", "4")
    assert r.exit_code == 1, r.output
    assert "labels outside the scale 0:1" in r.stderr and not (tmp_path / "o").exists()


# -- real runs ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_run_learns_writes_card_and_loads(tmp_path):
    from embedkit.encoder import Encoder

    train = _write(tmp_path / "train.tsv", _rows("train", 256))
    valid = _write(tmp_path / "valid.tsv", _rows("valid", 100))
    res = finetune(TINY, train, valid_pairs=valid, out_dir=tmp_path / "tuned", epochs=3, batch_size=16, lr=1e-3,
                   eval_steps=16, keep_anyway=True, progress=False)  # random weights: valid may not improve
    out = tmp_path / "tuned"
    assert res.out_dir == str(out) and res.steps == 48
    assert not Path(res.work_dir).exists()  # checkpoints removed once the model is in place
    card = json.loads((out / CARD_NAME).read_text(encoding="utf-8"))
    losses = [v for _, v in card["train_loss"]]
    assert len(losses) >= 6 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert card["base_model"]["path"] == str(TINY) and len(card["base_model"]["sha256"]) == 64
    assert card["base_model"]["weights_sha256"] == {"model.safetensors": card["base_model"]["weights_sha256"][
        "model.safetensors"]}
    assert card["data"]["train"]["n_pairs"] == 256 and card["data"]["valid"]["n_pairs"] == 100
    assert len(card["data"]["train"]["sha256"]) == 64
    assert card["loss"] == "cosent" and card["seed"] == 42 and card["device"] == "cpu" and card["steps"] == 48
    assert card["hyperparameters"]["lr"] == 1e-3 and card["hyperparameters"]["max_length"] == 64
    assert [s for s, _ in card["valid"]["curve"]] == [0, 16, 32, 48]
    assert card["valid"]["metric"] == "spearman" and card["valid"]["best"] == max(v for _, v in card["valid"]["curve"][1:])
    assert card["valid"]["accepted"] == res.accepted and card["valid"]["kept_anyway"] == (not res.accepted)
    assert {"torch", "sentence_transformers", "transformers", "embedkit"} <= set(card["versions"])
    assert card["wall_time_s"] > 0
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "tiny-random-bert-zh" in readme and "valid spearman" in readme
    vecs = Encoder(str(out)).encode(["今天天气不错", "明天会下雨吗"])
    assert vecs.shape == (2, 128) and np.isfinite(vecs).all()


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mnrl", "cmnrl"])
def test_tiny_in_batch_negatives_on_query_passage_jsonl(tmp_path, loss):
    pos = [r.split("\t") for r in _rows("train", 400) if r.endswith("\t1")][:96]
    assert len(pos) >= 64
    p = tmp_path / "qp.jsonl"
    p.write_text("".join(json.dumps({"query": a, "positive": b}, ensure_ascii=False) + "\n" for a, b, _ in pos),
                 encoding="utf-8")
    res = finetune(TINY, p, loss=loss, out_dir=tmp_path / "m", max_steps=4, batch_size=16, lr=1e-3,
                   valid_fraction=0.25, keep_anyway=True, progress=False)
    card = json.loads((tmp_path / "m" / CARD_NAME).read_text(encoding="utf-8"))
    assert res.metric == "mrr@10" and card["valid"]["metric"] == "mrr@10" and card["loss"] == loss
    n_valid = round(0.25 * len(pos))
    assert card["data"]["valid"]["n_pairs"] == n_valid and card["data"]["train"]["n_pairs"] == len(pos) - n_valid


@pytest.mark.slow
def test_time_budget_stops_training_and_keeps_the_last_step(tmp_path):
    train = _write(tmp_path / "train.tsv", _rows("train", 256))
    valid = _write(tmp_path / "valid.tsv", _rows("valid", 40))
    t0 = time.monotonic()
    res = finetune(TINY, train, valid_pairs=valid, out_dir=tmp_path / "b", epochs=50, batch_size=16, lr=1e-3,
                   eval_steps=100, time_budget=2.0, keep_anyway=True, progress=False)
    assert time.monotonic() - t0 < 60 and 0 < res.steps < 800
    card = json.loads((tmp_path / "b" / CARD_NAME).read_text(encoding="utf-8"))
    assert card["stopped_by_time_budget"] and card["time_budget_s"] == 2.0 and card["total_steps_planned"] == 800
    assert card["valid"]["curve"][-1][0] == res.steps  # the step it stopped at was evaluated (and could win)


@pytest.mark.slow
def test_m3e_small_short_run_writes_card(tmp_path):
    train = _write(tmp_path / "train.tsv", _rows("train", 200))
    valid = _write(tmp_path / "valid.tsv", _rows("valid", 200))
    res = finetune(M3E, train, valid_pairs=valid, out_dir=tmp_path / "m3e", max_steps=10, batch_size=16,
                   eval_steps=5, keep_anyway=True, progress=False)
    card = json.loads((tmp_path / "m3e" / CARD_NAME).read_text(encoding="utf-8"))
    assert card["steps"] == 10 and [s for s, _ in card["valid"]["curve"]] == [0, 5, 10]
    assert card["valid"]["accepted"] == res.accepted == (res.best_score > res.base_score)
    print(f"m3e-small, 200 LCQMC pairs, 10 steps: valid {res.base_score * 100:.2f} -> {res.best_score * 100:.2f}")


@pytest.mark.slow
def test_guard_refuses_a_model_trained_on_shuffled_labels(tmp_path):
    rows = _rows("train", 320)
    labels = [r.rsplit("\t", 1)[1] for r in rows]
    np.random.default_rng(0).shuffle(labels)
    train = _write(tmp_path / "shuffled.tsv", [r.rsplit("\t", 1)[0] + "\t" + y for r, y in zip(rows, labels)])
    valid = _write(tmp_path / "valid.tsv", _rows("valid", 120))
    out = tmp_path / "refused"
    r = _run_cli("finetune", "-m", M3E, "--pairs", train, "--valid", valid, "-o", out, "--max-steps", 6,
                 "--batch-size", 16, "--lr", "1e-3", "--warmup-ratio", 0, "--eval-steps", 3, "--no-progress")
    assert r.exit_code == 3, r.output
    summary = json.loads(r.stdout)
    assert summary["accepted"] is False and summary["best"] <= summary["base"]
    assert "not better than the base model" in r.stderr and "no model was written" in r.stderr
    assert f"base {summary['base']:.2f}" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_library_guard_raises_with_numbers_and_keeps_checkpoints(tmp_path):
    train = _write(tmp_path / "train.tsv", _rows("train", 64))
    valid = _write(tmp_path / "valid.tsv", _rows("valid", 40))
    with pytest.raises(GuardError, match=r"valid spearman: base \d+\.\d\d, best .* not better than the base "
                                         r"model by more than 100\.00; no model was written") as e:
        finetune(TINY, train, valid_pairs=valid, out_dir=tmp_path / "out", max_steps=2, batch_size=16,
                 min_delta=1.0, progress=False)
    assert not (tmp_path / "out").exists() and e.value.result.accepted is False
    assert [s for s, _ in e.value.result.valid_curve] == [0, 1, 2]
    ckpts = tmp_path / "out.partial" / "checkpoints"
    best = ckpts / f"checkpoint-{e.value.result.best_step}" / "model.safetensors"
    assert best.is_file()  # kept for a --keep-anyway rerun, which trains no further and writes the best
    from safetensors.torch import load_file

    best_w = load_file(str(best))
    res = finetune(TINY, train, valid_pairs=valid, out_dir=tmp_path / "out", max_steps=2, batch_size=16,
                   min_delta=1.0, keep_anyway=True, progress=False)
    assert res.kept_anyway and res.steps == 2 and res.resumed_from == 2 and res.best_step == e.value.result.best_step
    out_w = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(np.array_equal(best_w[k].numpy(), out_w[k].numpy()) for k in best_w)


# -- resume after SIGKILL -------------------------------------------------------------------------------------
def _cli_args(train: Path, valid: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "embedkit.cli", "finetune", "-m", str(TINY), "--pairs", str(train),
            "--valid", str(valid), "-o", str(out), "--max-steps", "6", "--save-steps", "2", "--batch-size", "16",
            "--lr", "1e-3", "--keep-anyway", "--no-progress"]


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    train = _write(tmp_path / "train.tsv", _rows("train", 128))
    valid = _write(tmp_path / "valid.tsv", _rows("valid", 40))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    ref = subprocess.run(_cli_args(train, valid, tmp_path / "ref"), capture_output=True, text=True, env=env,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "resumed"
    proc = subprocess.Popen(_cli_args(train, valid, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    ckpt = tmp_path / "resumed.partial" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()  # a kill never leaves a model at the output path

    again = subprocess.run(_cli_args(train, valid, out), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 2 and summary["steps"] == 6
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), "resumed weights differ"
    card = json.loads((out / CARD_NAME).read_text(encoding="utf-8"))
    ref_card = json.loads((tmp_path / "ref" / CARD_NAME).read_text(encoding="utf-8"))
    assert card["valid"]["curve"] == ref_card["valid"]["curve"] and card["resumed_from_step"] >= 2


# -- embedkit eval compares models (issue 18, item 3) ---------------------------------------------------------
def test_eval_report_compares_models_side_by_side():
    from embedkit.evaluation.tables import compare_table, markdown_tables

    def cell(model, task, sp, reducer="none"):
        return {"model": f"/m/{model}", "model_name": model, "pooling": "model", "reducer": reducer, "task": task,
                "split": "test", "spearman": sp, "dim": 8}

    cells = [cell("base", "BQ", 0.60), cell("base", "ATEC", 0.35), cell("tuned", "BQ", 0.65),
             cell("tuned", "ATEC", float("nan"))]
    results = {"settings": {"tasks": ["ATEC", "BQ"]}, "cells": cells,
               "averages": [{"model": f"/m/{m}", "model_name": m, "pooling": "model", "reducer": "none",
                             "split": "test", "spearman_avg": a, "spearman_w_avg": a}
                            for m, a in (("base", 0.475), ("tuned", 0.65))]}
    header, rows = compare_table(results, "test")
    assert header == ["model", "vs base", "pooling", "reducer", "ATEC", "BQ", "avg"]
    assert rows == [["tuned", "base", "model", "none", "—", "+5.00", "+17.50"]]
    assert "## Models compared" in markdown_tables(results)
    assert compare_table(dict(results, cells=cells[:2]), "test") == ([], [])


def test_finetune_help_and_package_import_load_nothing_heavy():
    code = ("import sys; import embedkit.training; from embedkit.cli import main\n"
            "try: main(['finetune', '--help'])\n"
            "except SystemExit: pass\n"
            "print('LOADED', [m for m in ('torch', 'sentence_transformers', 'datasets', 'faiss') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--keep-anyway" in r.stdout and "LOADED []" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_index_package_never_reaches_training():
    from .test_layout import import_graph

    g = import_graph()
    for start in [m for m in g if m == "embedkit.index" or m.startswith("embedkit.index.")]:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo.extend(g.get(m, ()))
        assert not any(m.startswith("embedkit.training") for m in seen), start
