"""Scoring one task of the grid: fit each reducer as the protocol says, score every split, and for
0/1-label tasks add AUC, accuracy / F1 at a threshold fitted on another split, and the calibration
error (ECE) of the isotonic probability.

Which split is used for what (never the scored split's labels, except where the split itself is named):

* reducers are fitted per protocol -- ``paper``: every evaluated split; ``fit-train``: train (or the
  corpus); ``fit-valid``: valid;
* ``auto`` chooses on the valid split's labels.  Its candidates are fitted on the protocol's fitting
  vectors, except under ``paper`` (whose fitting vectors include test sentences): there they are fitted
  on valid and the chosen spec is then refitted on the paper's vectors;
* the threshold and the probability map are fitted on valid (else train) and applied to each split.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..calibration import (
    Calibrator,
    best_threshold,
    classification_metrics,
    reliability_bins,
)
from ..encoder import l2_normalize
from ..errors import InputError
from ..reducers import make_reducer
from .metrics import sts_scores

log = logging.getLogger(__name__)


def pair_cosines(vectors: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Cosine of rows ``ia`` vs ``ib`` of ``vectors`` (one row per distinct sentence)."""
    u = l2_normalize(vectors)
    return np.einsum("ij,ij->i", u[ia], u[ib], dtype=np.float64)


def score_pairs(vectors: np.ndarray, ia: np.ndarray, ib: np.ndarray, labels) -> dict:
    """Cosine of rows ``ia`` vs ``ib`` of ``vectors`` against ``labels``: Spearman, Pearson, n."""
    return sts_scores(pair_cosines(vectors, ia, ib), labels)


def is_binary(labels) -> bool:
    y = np.asarray(labels)
    return bool(len(y)) and bool(np.isin(y, (0.0, 1.0)).all())


def classification(calib_sims, calib_labels, sims, labels, calibrated_on: str) -> dict:
    """AUC; accuracy and F1 at thresholds fitted on the calibration split (objective accuracy and F1
    respectively); the best accuracy any threshold reaches on this split (hindsight, for reference);
    ECE (10 bins) of the isotonic and Platt probabilities fitted on the calibration split."""
    y = np.asarray(labels, dtype=np.int64)
    iso = Calibrator("isotonic", "f1").fit(calib_sims, calib_labels)
    platt = Calibrator("platt", "f1").fit(calib_sims, calib_labels)
    acc_thr, _ = best_threshold(calib_sims, np.asarray(calib_labels, dtype=np.int64), "accuracy")
    probs = iso.predict_proba(sims)
    at_acc = classification_metrics(sims, y, acc_thr, probs)
    at_f1 = classification_metrics(sims, y, iso.threshold_)
    hindsight = best_threshold(sims, y, "accuracy")[1] if 0 < y.sum() < len(y) else math.nan
    return {"auc": at_acc["auc"], "accuracy": at_acc["accuracy"], "accuracy_threshold": acc_thr,
            "accuracy_best_in_hindsight": hindsight, "f1": at_f1["f1"], "f1_threshold": iso.threshold_,
            "ece": at_acc["ece"], "ece_platt": classification_metrics(sims, y, acc_thr, platt.predict_proba(sims))["ece"],
            "calibrated_on": calibrated_on, "n_calibration_pairs": len(calib_labels),
            "reliability": reliability_bins(probs, y)}


class TaskSides:
    """Per split name: ``(vectors of the distinct sentences, ia, ib, labels)``; scored splits plus the
    auxiliary valid (tuning) and train (fitting) splits when they were loaded."""

    def __init__(self, td, vectors: list, slots: dict, fit_set=None, tune_set=None):
        task = td.task
        self.sides = {s: (vectors[slots[(task, s)]], *td.unique[s][1:], td.pairsets[s].scores) for s in td.unique}
        if tune_set is not None and "valid" not in self.sides:
            _, ia, ib = tune_set.unique_sentences()
            self.sides["valid"] = (vectors[slots[(task, "#tune")]], ia, ib, tune_set.scores)
        if fit_set is not None and "train" not in self.sides:
            _, ia, ib = fit_set.unique_sentences()
            self.sides["train"] = (vectors[slots[(task, "#fit")]], ia, ib, fit_set.scores)

    def both_sides(self, split: str) -> np.ndarray:
        v, ia, ib, _ = self.sides[split]
        return np.concatenate([v[ia], v[ib]])

    def tune(self) -> tuple:
        v, ia, ib, y = self.sides["valid"]
        return v[ia], v[ib], y


def _fit_reducer(spec: str, protocol: str, sides: TaskSides, fit_x, task: str):
    """The fitted reducer for ``spec`` and, for ``auto``, the record of its choice."""
    red = make_reducer(spec)
    if red.kind == "none":
        return red.fit(sides.both_sides(next(iter(sides.sides)))), None
    if red.kind != "auto":
        return red.fit(fit_x()), None
    if "valid" not in sides.sides:
        raise InputError(f"{spec} on {task}: auto chooses on the task's valid split, which is missing "
                         f"(add <TASK>/{task}.valid.data, or leave auto out)")
    if protocol == "paper":  # the paper's fitting vectors hold test sentences: choose on valid only
        auto = red.fit(sides.both_sides("valid"), tune=sides.tune())
        chosen = make_reducer(auto.choice_).fit(fit_x())
        fitted_on = "valid (candidates); the paper's vectors (choice)"
    else:
        auto = red.fit(fit_x(), tune=sides.tune())
        chosen = auto
        fitted_on = "the protocol's fitting vectors"
    record = {"choice": auto.choice_, "tuned_on": "valid", "n_tune_pairs": auto.n_tune_pairs_,
              "fitted_on": fitted_on, "grid": [{k: r[k] for k in ("spec", "k", "beta", "gamma", "spearman")}
                                               for r in auto.grid_]}
    return chosen, record


def score_task(td, vectors: list, slots: dict, reducer_specs: list[str], protocol: str, fit_set,
               use_corpus: bool, info: dict, tune_set=None) -> list[dict]:
    """One cell per (reducer, scored split) of one task and one encoder configuration."""
    task = td.task
    sides = TaskSides(td, vectors, slots, fit_set, tune_set)
    if protocol == "paper":
        fit_desc = {"on": "+".join(td.unique), "n_vectors": int(sum(2 * len(s[1]) for s in
                                                                       (sides.sides[x] for x in td.unique)))}
        fit_x = lambda: np.concatenate([sides.both_sides(s) for s in td.unique])
    elif protocol == "fit-valid":
        fit_desc = {"on": "valid", "n_vectors": int(2 * len(sides.sides["valid"][1]))} if "valid" in sides.sides else None
        fit_x = lambda: sides.both_sides("valid")
    elif use_corpus:
        corpus = vectors[slots[("#corpus",)]]
        fit_desc = {"on": "corpus", "n_vectors": len(corpus)}
        fit_x = lambda: corpus
    elif "train" in sides.sides:
        fit_desc = {"on": "train", "n_vectors": int(2 * len(sides.sides["train"][1]))}
        fit_x = lambda: sides.both_sides("train")
    else:
        fit_desc, fit_x = None, None
    calib_split = next((s for s in ("valid", "train") if s in sides.sides and is_binary(sides.sides[s][3])), None)
    cache: dict = {}
    X = lambda: cache.setdefault("X", fit_x())
    out = []
    for spec in reducer_specs:
        t0 = time.perf_counter()
        error, auto, red = None, None, make_reducer(spec)
        transformed = {}
        try:
            red, auto = _fit_reducer(spec, protocol, sides, X, task)
            for s, (v, _, _, _) in sides.sides.items():
                transformed[s] = v if red.kind == "none" else red.transform(v)
        except InputError as e:
            error = str(e)
            log.warning("%s %s %s on %s: %s", info["name"], info["pooling"], spec, task, e)
        fit_s = time.perf_counter() - t0
        calib = None
        if error is None and calib_split is not None:
            _, cia, cib, cy = sides.sides[calib_split]
            calib = (pair_cosines(transformed[calib_split], cia, cib), cy)
        for s, ps in td.pairsets.items():
            t1 = time.perf_counter()
            kind = make_reducer(spec).kind
            cell = {"model": info["model"], "model_name": info["name"], "pooling": info["pooling"],
                    "max_length": info["max_length"], "reducer": spec, "reducer_kind": kind,
                    "dim": None, "task": task, "split": s, "n_pairs": len(ps),
                    "spearman": math.nan, "pearson": math.nan,
                    "fit": fit_desc if kind != "none" else None, "error": error}
            if auto is not None:
                cell["auto"] = auto
            if error is None:
                _, ia, ib = td.unique[s]
                sims = pair_cosines(transformed[s], ia, ib)
                cell.update(sts_scores(sims, ps.scores))
                cell["dim"] = int(transformed[s].shape[1])
                if calib is not None and is_binary(ps.scores):
                    try:
                        cell["classification"] = classification(calib[0], calib[1], sims, ps.scores, calib_split)
                    except InputError as e:
                        cell["classification"] = {"error": str(e)}
            cell["seconds"] = round(fit_s / len(td.pairsets) + time.perf_counter() - t1, 4)
            out.append(cell)
    return out
