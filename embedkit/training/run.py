"""``finetune()``: base model + pairs -> a better sentence-transformers model at ``out_dir``, or nothing.

Steps, in order: read and check the data (no model loaded yet), load the base model (refused if it is not
a sentence encoder), score it on the held-back pairs, train with sentence-transformers' trainer in the work
directory (resuming from its last checkpoint if there is one), keep the best checkpoint by the held-back
score, apply the guard, write the model with its training card to the work directory and rename it to
``out_dir``. Nothing here sets environment variables or log levels."""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import FINETUNE_DEFAULTS
from ..errors import InputError
from . import workdir
from .card import base_identity, library_versions, write_card
from .data import DEFAULT_LABEL_SCALE, LOSSES, check_batch, check_valid, load_pairs, parse_label_scale, split_valid
from .guard import GuardError, improved, verdict

log = logging.getLogger(__name__)

DEFAULTS = FINETUNE_DEFAULTS  # chosen by measurement: see embedkit/constants.py


@dataclass
class FinetuneResult:
    """What a run did. Scores are fractions (×100 for reports); ``accepted`` is the guard's verdict."""

    out_dir: str | None
    work_dir: str
    metric: str
    base_score: float
    best_score: float
    best_step: int | None
    steps: int
    accepted: bool
    kept_anyway: bool = False
    resumed_from: int | None = None
    wall_time_s: float = 0.0
    valid_curve: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    card: dict = field(default_factory=dict)

    @property
    def delta(self) -> float:
        return self.best_score - self.base_score

    def summary(self) -> dict:
        return {"out_dir": self.out_dir, "work_dir": self.work_dir, "metric": self.metric,
                "base": round(self.base_score * 100, 2), "best": round(self.best_score * 100, 2),
                "delta": round(self.delta * 100, 2) if math.isfinite(self.delta) else None,
                "best_step": self.best_step, "steps": self.steps, "accepted": self.accepted,
                "kept_anyway": self.kept_anyway, "resumed_from": self.resumed_from,
                "wall_time_s": round(self.wall_time_s, 1)}


def _positive(name, value, kind=int, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise InputError(f"{name} must be a positive {'number' if kind is float else 'integer'}, got {value!r}")
    return value


def _steps(n_train: int, hp: dict) -> dict:
    per_epoch = math.ceil(n_train / hp["batch_size"])
    total = hp["max_steps"] or max(1, math.ceil(per_epoch * hp["epochs"]))
    eval_steps, save_steps = hp["eval_steps"], hp["save_steps"]
    if eval_steps is None:
        eval_steps = save_steps or max(1, math.ceil(total / 10))
    if save_steps is None:
        save_steps = eval_steps
    if save_steps % eval_steps:
        raise InputError(f"save steps ({save_steps}) must be a multiple of eval steps ({eval_steps}): the best "
                         "checkpoint is chosen among evaluated checkpoints")
    return dict(hp, eval_steps=eval_steps, save_steps=save_steps, total_steps=total,
                warmup_steps=int(math.ceil(hp["warmup_ratio"] * total)),
                logging_steps=max(1, min(50, math.ceil(total / 20))))


def finetune(base, train_pairs, *, out_dir, valid_pairs=None, loss: str = "cosent", label_scale=DEFAULT_LABEL_SCALE,
             valid_fraction: float = DEFAULTS["valid_fraction"], epochs: float = DEFAULTS["epochs"],
             max_steps: int | None = None, time_budget: float | None = None, lr: float = DEFAULTS["lr"],
             batch_size: int = DEFAULTS["batch_size"], max_length: int = DEFAULTS["max_length"],
             warmup_ratio: float = DEFAULTS["warmup_ratio"], weight_decay: float = DEFAULTS["weight_decay"],
             seed: int = DEFAULTS["seed"], eval_steps: int | None = None, save_steps: int | None = None,
             min_delta: float = 0.0, keep_anyway: bool = False, overwrite: bool = False, work_dir=None,
             restart: bool = False, keep_checkpoints: bool = False, device: str | None = None,
             hard_negatives=None, hard_negatives_k: int = 10, hard_negatives_skip: int = 0,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune ``base`` (a model directory or hub id) on ``train_pairs`` and write the model to ``out_dir``.

    ``train_pairs`` / ``valid_pairs``: a file or a sequence of tuples (see :func:`embedkit.training.data.load_pairs`);
    without ``valid_pairs`` a seeded ``valid_fraction`` of the training pairs is held back. ``loss``:
    ``"cosent"`` (labelled pairs, labels inside ``label_scale``), ``"mnrl"`` (query/positive pairs,
    in-batch negatives) or ``"cmnrl"`` (the same, cached: large batches in little memory). Held-back score:
    Spearman for labelled valid pairs, MRR@10 otherwise. ``hard_negatives``: an embedkit index directory;
    each training pair (mnrl/cmnrl) gets as a third column the best of the index's top
    ``hard_negatives_k`` passages for its query that is not its positive (after ``hard_negatives_skip``):
    :mod:`embedkit.training.negatives`.

    The guard: if the best checkpoint's valid score is not above the base model's by more than
    ``min_delta``, :class:`~embedkit.training.guard.GuardError` is raised and nothing is written to
    ``out_dir`` (``keep_anyway=True`` writes the best checkpoint all the same). The checkpoints stay in the
    work directory (default ``<out_dir>.partial``); calling again with the same settings resumes from
    the last one (``restart=True`` discards them). Bad input raises InputError before training starts."""
    t_start = time.monotonic()
    if loss not in LOSSES:
        raise InputError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    scale = parse_label_scale(label_scale)
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        _positive(name, value)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    _positive("epochs", epochs, float)
    _positive("lr", lr, float)
    _positive("max_steps", max_steps, allow_none=True)
    _positive("eval_steps", eval_steps, allow_none=True)
    _positive("save_steps", save_steps, allow_none=True)
    _positive("time_budget", time_budget, float, allow_none=True)
    if not 0.0 <= warmup_ratio < 1.0:
        raise InputError(f"warmup_ratio must be in [0, 1), got {warmup_ratio!r}")
    out_dir = Path(out_dir).expanduser().absolute()
    work = Path(work_dir).expanduser().absolute() if work_dir else workdir.default_work_dir(out_dir)
    workdir.check_out_dir(out_dir, overwrite)

    # -- data, checked before any model is loaded -------------------------------------------------
    train = load_pairs(train_pairs, loss=loss, label_scale=scale, what="training")
    if valid_pairs is not None:
        # read like the training pairs: labelled (scored by Spearman) for cosent, query/positive (MRR@10) for mnrl
        valid = load_pairs(valid_pairs, loss=loss, label_scale=scale, what="valid")
    else:
        train, valid = split_valid(train, valid_fraction, seed)
    check_valid(valid)
    if hard_negatives is not None:
        if loss == "cosent":
            raise InputError("hard negatives are for --loss mnrl or cmnrl (query, relevant text pairs), not cosent")
        from .negatives import mine_hard_negatives

        train = mine_hard_negatives(train, hard_negatives, k=hard_negatives_k, skip=hard_negatives_skip)
    check_batch(train, batch_size)
    hp = _steps(len(train), {"lr": lr, "epochs": float(epochs), "max_steps": max_steps, "batch_size": batch_size,
                             "max_length": max_length, "warmup_ratio": warmup_ratio, "weight_decay": weight_decay,
                             "seed": seed, "eval_steps": eval_steps, "save_steps": save_steps})

    # -- the base model ---------------------------------------------------------------------------
    import torch

    from .trainer import curves, load_base, load_best, make_trainer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, base_name = load_base(base, device=device, max_length=max_length)
    base_id = base_identity(base_name)
    settings = {"base": base_id["sha256"] or base_name, "loss": loss, "label_scale": list(scale),
                "train_sha256": train.sha256, "n_train": len(train), "valid_sha256": valid.sha256,
                "n_valid": len(valid), "valid_split": valid.extra or None, "device_type": device.split(":")[0],
                "hard_negatives": train.extra.get("hard_negatives"),
                **{k: v for k, v in hp.items() if k != "logging_steps"}}
    workdir.prepare(work, settings, restart=restart)
    ckpt_root = work / "checkpoints"
    resume = workdir.last_checkpoint(ckpt_root)

    from .scoring import valid_score

    base_res = valid_score(model, valid, batch_size=batch_size)
    metric = base_res["metric"]
    log.info("base model %s: valid %s %.2f on %d held-back pairs", Path(base_name).name, metric,
             base_res["score"] * 100, len(valid))

    # -- training -----------------------------------------------------------------------------------
    trainer, budget = make_trainer(model, train, valid, loss=loss, ckpt_root=ckpt_root, hp=hp, device=device,
                                   progress=progress, time_budget=time_budget)
    resumed_from = None
    if resume is not None:
        resumed_from = int(resume.name.rsplit("-", 1)[1])
        log.info("resuming from %s (step %d)", resume, resumed_from)
    t_train = time.monotonic()
    finished = workdir.finished_state(resume)
    if finished is None:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        state = trainer.state
    else:  # the checkpoints hold a finished run (e.g. refused by the guard): take its best, train no further
        state = finished
        load_best(model, state.best_model_checkpoint or str(resume))
    train_s = time.monotonic() - t_train
    valid_curve, train_loss = curves(state.log_history)
    valid_curve = [[0, base_res["score"]]] + [c for c in valid_curve if c[0] != 0]
    best_score = float(state.best_metric) if state.best_metric is not None else math.nan
    best_step = None
    if state.best_model_checkpoint:
        best_step = int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[1])
    accepted = improved(base_res["score"], best_score, min_delta)
    line = verdict(metric, base_res["score"], best_score, best_step, min_delta)
    result = FinetuneResult(out_dir=None, work_dir=str(work), metric=metric, base_score=base_res["score"],
                            best_score=best_score, best_step=best_step, steps=int(state.global_step),
                            accepted=accepted, resumed_from=resumed_from, valid_curve=valid_curve,
                            train_loss=train_loss)
    if not accepted and not keep_anyway:
        result.wall_time_s = time.monotonic() - t_start
        raise GuardError(f"{line}; no model was written to {str(out_dir)!r} (checkpoints are kept in "
                         f"{str(work)!r}: rerun with --keep-anyway to write the best one anyway, or delete it)",
                         result)
    (log.info if accepted else log.warning)("%s%s", line, "" if accepted else "; kept anyway (--keep-anyway)")

    # -- the model, its card, and the hand-over ------------------------------------------------------
    staged = work / "model"
    if staged.exists():
        shutil.rmtree(staged)
    model.save_pretrained(str(staged))
    result.kept_anyway = not accepted
    result.wall_time_s = time.monotonic() - t_start
    result.card = {
        "format": "embedkit-training-card", "version": 1,
        "base_model": base_id, "loss": loss, "label_scale": list(scale),
        "data": {"train": train.summary(), "valid": valid.summary()},
        "hyperparameters": {k: hp[k] for k in ("lr", "epochs", "max_steps", "batch_size", "max_length",
                                               "warmup_ratio", "warmup_steps", "weight_decay", "eval_steps",
                                               "save_steps")},
        "seed": seed, "device": device, "steps": result.steps, "total_steps_planned": hp["total_steps"],
        "time_budget_s": time_budget, "stopped_by_time_budget": budget.stopped_at is not None,
        "resumed_from_step": resumed_from, "train_time_s": round(train_s, 2),
        "wall_time_s": round(result.wall_time_s, 2),
        "valid": {"metric": metric, "base": base_res["score"], "best": best_score, "best_step": best_step,
                  "delta": best_score - base_res["score"], "accepted": accepted, "kept_anyway": not accepted,
                  "min_delta": min_delta, "curve": valid_curve},
        "train_loss": train_loss,
        "versions": library_versions(),
    }
    write_card(staged, result.card)
    workdir.publish(staged, out_dir, overwrite=overwrite)
    result.out_dir = str(out_dir)
    if not keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    return result
