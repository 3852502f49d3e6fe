"""The sentence-transformers side of fine-tuning: model, dataset, loss, evaluator, callbacks, trainer.

Imported only when a run starts (it loads torch, sentence-transformers, transformers and ``datasets``)."""

from __future__ import annotations

import time
from pathlib import Path

from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from transformers import TrainerCallback

from ..errors import InputError, ModelNotFoundError
from ..models import resolve_model
from .data import TrainingPairs
from .scoring import valid_score

try:  # sentence-transformers >= 6 moved these; 5.x has them at the old paths
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        CoSENTLoss,
        MultipleNegativesRankingLoss,
    )
except ImportError:  # pragma: no cover - sentence-transformers 5.x
    from sentence_transformers.evaluation import SentenceEvaluator
    from sentence_transformers.losses import (
        CachedMultipleNegativesRankingLoss,
        CoSENTLoss,
        MultipleNegativesRankingLoss,
    )

CACHED_MINI_BATCH = 32  # cmnrl: texts per forward pass; the batch (and so the negatives) can be far larger

METRIC_KEY = "eval_valid_score"  # what the trainer selects the best checkpoint by


def load_base(base, *, device: str, max_length: int) -> tuple[SentenceTransformer, str]:
    """Load the base model as a sentence encoder, or raise InputError saying why it is not one."""
    try:
        name = resolve_model(base)
    except ModelNotFoundError as e:
        raise InputError(f"base model: {e}") from None
    local = Path(name).is_dir()
    try:
        model = SentenceTransformer(name, device=device, local_files_only=local)
    except Exception as e:  # noqa: BLE001 - anything that stops loading means "not a sentence encoder"
        raise InputError(f"base model {name!r} could not be loaded as a sentence encoder "
                         f"({type(e).__name__}: {str(e)[:300]})") from None
    try:
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get()
    except Exception:  # noqa: BLE001
        dim = None
    if not dim or not hasattr(model, "tokenizer") or model.tokenizer is None:
        raise InputError(f"base model {name!r} is not a sentence encoder (no tokenizer or no embedding dimension)")
    model.max_seq_length = max_length
    return model, name


def load_best(model: SentenceTransformer, checkpoint: str) -> None:
    """Load a checkpoint's weights into ``model`` (as the trainer does for ``load_best_model_at_end``)."""
    best = SentenceTransformer(checkpoint, device=str(model.device), local_files_only=True)
    model.load_state_dict(best.state_dict())


class ValidEvaluator(SentenceEvaluator):
    """embedkit's held-back score (Spearman or MRR@10), reported to the trainer as ``valid_score``."""

    def __init__(self, valid: TrainingPairs, batch_size: int):
        super().__init__()
        self.valid = valid
        self.batch_size = batch_size
        self.name = "valid"
        self.primary_metric = "score"
        self.greater_is_better = True

    def __call__(self, model, output_path=None, epoch: float = -1, steps: int = -1) -> dict:
        res = valid_score(model, self.valid, batch_size=self.batch_size)
        self.primary_metric = "score"
        return self.prefix_name_to_metrics({"score": res["score"]}, self.name)


class TimeBudget(TrainerCallback):
    """Stop after ``seconds`` of training in this process; the last step is evaluated and saved, so the
    best-checkpoint choice and a later resume both see it."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = None
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is not None and time.monotonic() - self.start >= self.seconds:
            control.should_training_stop = True
            control.should_evaluate = True
            control.should_save = True
            self.stopped_at = state.global_step
        return control


class EvaluateLastStep(TrainerCallback):
    """Evaluate (and so rank) the final step too, not only the multiples of ``eval_steps``."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_evaluate = True
            control.should_save = True
        return control


def make_dataset(pairs: TrainingPairs):
    from datasets import Dataset

    if pairs.labelled:
        return Dataset.from_dict({"sentence1": pairs.sentences1, "sentence2": pairs.sentences2,
                                  "score": [float(v) for v in pairs.labels]})
    columns = {"anchor": pairs.sentences1, "positive": pairs.sentences2}
    if pairs.negatives is not None:  # (anchor, positive, negative): the in-batch losses take a third column
        columns["negative"] = pairs.negatives
    return Dataset.from_dict(columns)


def make_loss(model, loss: str):
    if loss == "cosent":
        return CoSENTLoss(model)
    if loss == "cmnrl":
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=CACHED_MINI_BATCH)
    return MultipleNegativesRankingLoss(model)


def make_trainer(model, train: TrainingPairs, valid: TrainingPairs, *, loss: str, ckpt_root: Path, hp: dict,
                 device: str, progress: bool, time_budget: float | None):
    """A SentenceTransformerTrainer that evaluates on ``valid`` every ``eval_steps``, saves a resumable
    checkpoint every ``save_steps`` and loads the best checkpoint (by valid score) at the end."""
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_root),
        num_train_epochs=hp["epochs"],
        max_steps=hp["max_steps"] or -1,
        per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["batch_size"],
        learning_rate=hp["lr"],
        warmup_steps=hp["warmup_steps"],  # from warmup_ratio (deprecated as an argument in transformers 5)
        weight_decay=hp["weight_decay"],
        seed=hp["seed"],
        data_seed=hp["seed"],
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        eval_strategy="steps",
        eval_steps=hp["eval_steps"],
        save_strategy="steps",
        save_steps=hp["save_steps"],
        save_total_limit=2,  # the best and the last are always kept
        load_best_model_at_end=True,
        metric_for_best_model=METRIC_KEY,
        greater_is_better=True,
        logging_steps=hp["logging_steps"],
        report_to="none",
        disable_tqdm=not progress,
        batch_sampler="batch_sampler" if loss == "cosent" else "no_duplicates",  # BatchSamplers values
    )
    budget = TimeBudget(time_budget)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=make_dataset(train), loss=make_loss(model, loss),
        evaluator=ValidEvaluator(valid, hp["batch_size"]), callbacks=[EvaluateLastStep(), budget])
    return trainer, budget


def curves(log_history: list[dict]) -> tuple[list, list]:
    """``(valid curve [(step, score)], train loss [(step, loss)])`` from the trainer's log history."""
    valid, losses = [], []
    for e in log_history:
        if METRIC_KEY in e:
            valid.append([int(e["step"]), float(e[METRIC_KEY])])
        if "loss" in e and "step" in e:
            losses.append([int(e["step"]), float(e["loss"])])
    seen = {}
    for s, v in valid:  # a step evaluated twice (budget stop on an eval step) is listed once
        seen[s] = v
    return [[s, v] for s, v in sorted(seen.items())], losses
