"""``embedkit finetune``: adapt an encoder to the user's pairs, refused unless it beats the base on held-back pairs.

Imports nothing heavy at module level (torch, sentence-transformers and datasets load when it runs)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from . import EmbedkitUsageError
from ..constants import FINETUNE_DEFAULTS as D

GUARD_EXIT = 3  # the guard refused the model (input errors exit 1)


class GuardRefused(EmbedkitUsageError):
    exit_code = GUARD_EXIT


@click.command()
@click.option("--model", "-m", "base", default=None, envvar="EMBEDKIT_MODEL", show_envvar=True,
              help="Base model directory or hub id (default: m3e-small, see README).")
@click.option("--pairs", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training pairs: sentence1<TAB>sentence2<TAB>label (cosent); for mnrl query<TAB>text, "
                   "JSONL {query, positive}, or labelled pairs (the top label is kept).")
@click.option("--valid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Held-back pairs to score on [default: a seeded --valid-fraction of --pairs].")
@click.option("--output", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the fine-tuned model directory is written (only if it beats the base).")
@click.option("--loss", type=click.Choice(["cosent", "mnrl", "cmnrl"]), default="cosent", show_default=True,
              help="cosent: labelled pairs (CoSENTLoss); mnrl: (query, relevant text) pairs, in-batch negatives "
                   "(MultipleNegativesRankingLoss); cmnrl: its cached variant, for large batches in little memory.")
@click.option("--label-scale", default="0:1", show_default=True, metavar="LOW:HIGH",
              help="Allowed label range (0:1 for 0/1 labels, 0:5 for STS-B); labels outside it are refused.")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=D["valid_fraction"],
              show_default=True, help="Share of --pairs held back when no --valid is given.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=D["epochs"], show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after N optimizer steps.")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop training after this many seconds (the last step is evaluated and saved).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D["lr"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=D["batch_size"], show_default=True)
@click.option("--max-length", type=click.IntRange(min=1), default=D["max_length"], show_default=True)
@click.option("--warmup-ratio", type=click.FloatRange(0, 1, max_open=True), default=D["warmup_ratio"], show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=D["seed"], show_default=True)
@click.option("--eval-steps", type=click.IntRange(min=1), default=None,
              help="Score on the valid pairs every N steps [default: --save-steps, else a tenth of the run].")
@click.option("--save-steps", type=click.IntRange(min=1), default=None,
              help="Write a resumable checkpoint every N steps [default: --eval-steps]; a multiple of it.")
@click.option("--min-delta", type=float, default=0.0, show_default=True,
              help="The guard: the best checkpoint must beat the base by more than this (a fraction, 0.01 = 1 point).")
@click.option("--keep-anyway", is_flag=True, help="Write the best checkpoint even if it does not beat the base.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUTPUT once the new model is ready.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoints and staging [default: OUTPUT.partial]; rerunning the same command resumes from it.")
@click.option("--restart", is_flag=True, help="Discard the checkpoints in the work dir and start over.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the work dir after the model is written.")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA if available).")
@click.option("--hard-negatives", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="INDEX_DIR", help="mnrl/cmnrl: give each pair the best passage of this embedkit index for its "
                                        "query that is not its positive, as a third column (a hard negative).")
@click.option("--hard-negatives-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Hits searched per query for --hard-negatives.")
@click.option("--hard-negatives-skip", type=click.IntRange(min=0), default=0, show_default=True,
              help="Leave aside the best N candidates (they may be unlabelled positives).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def finetune(base, pairs, valid, out_dir, loss, label_scale, valid_fraction, epochs, max_steps, time_budget, lr,
             batch_size, max_length, warmup_ratio, seed, eval_steps, save_steps, min_delta, keep_anyway, overwrite,
             work_dir, restart, keep_checkpoints, device, hard_negatives, hard_negatives_k, hard_negatives_skip,
             no_progress):
    """Fine-tune the encoder on labelled PAIRS and write it to OUTPUT, if it beats the base model.

    The base model and every checkpoint (each --eval-steps) are scored on held-back pairs with embedkit's
    evaluation (Spearman; MRR@10 for query/passage pairs). The best checkpoint is kept; if it does not beat
    the base, nothing is written and the command exits 3 (unless --keep-anyway). OUTPUT gets the model,
    training_card.json and a README line; a kill leaves OUTPUT untouched and the run resumable.

    \b
      embedkit finetune --pairs train.tsv -o models/tuned --time-budget 1800
      embedkit eval --models m3e-small-dir,models/tuned --reducers none
    """
    from ..training import GuardError
    from ..training import finetune as run

    try:
        # the trainer prints its log lines with tqdm.write (stdout): stdout is for the result only
        with contextlib.redirect_stdout(sys.stderr):
            result = run(base, pairs, out_dir=out_dir, valid_pairs=valid, loss=loss, label_scale=label_scale,
                         valid_fraction=valid_fraction, epochs=epochs, max_steps=max_steps, time_budget=time_budget,
                         lr=lr, batch_size=batch_size, max_length=max_length, warmup_ratio=warmup_ratio, seed=seed,
                         eval_steps=eval_steps, save_steps=save_steps, min_delta=min_delta, keep_anyway=keep_anyway,
                         overwrite=overwrite, work_dir=work_dir, restart=restart, keep_checkpoints=keep_checkpoints,
                         device=device, hard_negatives=hard_negatives, hard_negatives_k=hard_negatives_k,
                         hard_negatives_skip=hard_negatives_skip, progress=not no_progress)
    except GuardError as e:
        if e.result is not None:
            click.echo(json.dumps(e.result.summary(), ensure_ascii=False))
        raise GuardRefused(str(e)) from None
    click.echo(json.dumps(result.summary(), ensure_ascii=False))
