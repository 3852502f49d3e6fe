"""``embedkit calibrate``: turn an index's similarity scores into calibrated "same question?" probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import backend_option


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pairs", "pairs", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labelled pairs, sentence1<TAB>sentence2<TAB>label (0/1, or a graded scale with --positive-label).")
@click.option("--method", type=click.Choice(["isotonic", "platt"]), default="isotonic", show_default=True,
              help="Score -> P(similar) map: isotonic regression or Platt scaling (scikit-learn).")
@click.option("--objective", type=click.Choice(["probability", "f1", "accuracy"]), default="probability",
              show_default=True,
              help="When `match` is true: probability = calibrated P(similar) >= 0.5 (never less accurate on "
                   "the pairs than always answering yes or always no); f1 / accuracy = the score cut "
                   "maximising that metric on the pairs.")
@click.option("--positive-label", type=float, default=None,
              help="Graded labels: pairs labelled at or above this count as similar (e.g. 4 on STS-B's 0-5).")
@backend_option()
@click.option("--device", default=None)
def calibrate(directory: Path, pairs: Path, method: str, objective: str, positive_label: float | None,
              backend: str, device: str | None):
    """Fit P(similar) and a match threshold on labelled PAIRS for the index in DIRECTORY.

    Searches then return `probability` and `match` beside `score` (and accept --min-probability);
    the calibration is part of the index's query path and is refused if the model, pooling, reducer
    or normalisation change."""
    from ..index import EmbedIndex

    idx = EmbedIndex.load(directory, backend=backend, device=device)
    summary = idx.calibrate(pairs, method=method, objective=objective, positive_label=positive_label)
    click.echo(json.dumps({"index": str(directory), **{k: summary[k] for k in (
        "method", "objective", "threshold", "n_pairs", "n_positive", "fit_metrics", "skipped_rows")}},
        ensure_ascii=False))
