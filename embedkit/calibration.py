"""Calibrated similarity: turn a cosine score into "are these two the same?" on the user's own labels.

:class:`Calibrator` is fitted on labelled pairs (0/1 labels, or a graded scale cut at
``positive_label``) and learns

* ``threshold_``: the score at or above which a pair matches. By default (objective ``probability``)
  **a pair matches when its calibrated P(similar) is at least 0.5** ("more likely than not the same");
  it is never less accurate on the fitted pairs than the better constant answer (always "yes" or always
  "no"; a cut that would be falls back to that answer). Objectives ``f1`` and ``accuracy`` instead choose
  the cut maximising that metric on the pairs (F1 favours recall: on a task the encoder barely
  separates, it may match almost everything);
* a monotone map score -> P(similar): isotonic regression or Platt scaling (scikit-learn).

It is stored as JSON (no pickle) with the query path it was fitted for (a dict such as
``QueryPath.describe()``); :meth:`Calibrator.check_compatible` refuses a calibration made for another
model, pooling, reducer or normaliser.  Metrics for 0/1 tasks: :func:`expected_calibration_error`
(10 equal-width bins), :func:`reliability_bins` (the diagram's data), :func:`classification_metrics`
(AUC, accuracy and F1 at a threshold), :func:`best_threshold`.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .errors import IndexFormatError, InputError
from .fsutil import atomic_write_json, read_json

FORMAT = "embedkit-calibration"
FORMAT_VERSION = 1
METHODS = ("isotonic", "platt")
OBJECTIVES = ("probability", "f1", "accuracy")  # probability: match = P(similar) >= 0.5
MIN_PAIRS = 20


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def read_labelled_pairs(path: str | os.PathLike, *, limit: int | None = None):
    """A pairs file (``sentence1<TAB>sentence2<TAB>label`` lines) through the evaluation loader: a
    :class:`~embedkit.evaluation.data.PairSet` whose ``skipped`` counts malformed rows by reason."""
    from .evaluation.data import read_pairs

    ps = read_pairs(path, split="pairs", limit=limit)
    if not len(ps):
        raise InputError(f"pairs file {str(path)!r} has no usable pairs ({ps.n_rows} rows read, skipped: "
                         f"{ps.skipped or 'none'}); expected sentence1<TAB>sentence2<TAB>label lines")
    return ps


def _scores(scores, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise InputError(f"{what} must be a 1-D sequence of numbers, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise InputError(f"{what} contain NaN or infinite values (first at position "
                         f"{int(np.flatnonzero(~np.isfinite(s))[0])})")
    return s


def binary_labels(labels, positive_label: float | None = None) -> np.ndarray:
    """0/1 labels as ints; a graded scale (e.g. STS-B's 0-5) needs ``positive_label`` (label >= it is 1)."""
    y = _scores(labels, "labels")
    if positive_label is not None:
        if not math.isfinite(float(positive_label)):
            raise InputError(f"positive_label must be a finite number, got {positive_label!r}")
        return (y >= float(positive_label)).astype(np.int64)
    values = np.unique(y)
    if not np.isin(values, (0.0, 1.0)).all():
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise InputError(f"labels are not 0/1 (values: {shown}); pass positive_label "
                         f"(--positive-label) to count label >= it as similar")
    return y.astype(np.int64)


def check_binary(y: np.ndarray, min_pairs: int = MIN_PAIRS) -> None:
    """At least ``min_pairs`` pairs and both classes present, or an InputError giving the numbers."""
    n, pos = len(y), int(y.sum())
    if n < min_pairs:
        raise InputError(f"calibration needs at least {min_pairs} labelled pairs, got {n} "
                         f"({pos} similar, {n - pos} not)")
    if pos == 0 or pos == n:
        raise InputError(f"labels are all one class: {n} pairs, {pos} similar and {n - pos} not; "
                         "calibration needs examples of both")


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def best_threshold(scores, y, objective: str = "f1") -> tuple[float, float]:
    """``(threshold, value)``: the cut (match = score >= threshold) maximising F1 or accuracy on these
    pairs, placed midway between the last matching and the next lower score; the highest cut wins ties."""
    from sklearn.metrics import roc_curve

    if objective not in ("f1", "accuracy"):
        raise InputError(f"objective {objective!r} is not one of f1, accuracy")
    s, y = _scores(scores), np.asarray(y, dtype=np.int64)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    P, N = int(y.sum()), int(len(y) - y.sum())
    tp, fp = tpr * P, fpr * N
    if objective == "f1":
        value = np.divide(2 * tp, 2 * tp + fp + (P - tp), out=np.zeros_like(tp), where=(2 * tp + fp + P - tp) > 0)
    else:
        value = (tp + N - fp) / len(y)
    i = int(np.argmax(value))
    distinct = np.unique(s)
    if not math.isfinite(thr[i]):  # predict nothing: just above the highest score
        return float(np.nextafter(distinct[-1], np.inf)), float(value[i])
    lower = distinct[distinct < thr[i]]
    cut = (thr[i] + lower[-1]) / 2 if len(lower) else thr[i]
    return float(cut), float(value[i])


def reliability_bins(probs, y, n_bins: int = 10) -> list[dict]:
    """Per equal-width bin of predicted probability (sklearn ``calibration_curve``'s binning): its
    range, the number of pairs, the mean predicted probability and the fraction that are similar."""
    p, y = _scores(probs, "probabilities"), np.asarray(y, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    total = np.bincount(ids, minlength=n_bins)
    psum = np.bincount(ids, weights=p, minlength=n_bins)
    ysum = np.bincount(ids, weights=y, minlength=n_bins)
    return [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(total[b]),
             "mean_prob": float(psum[b] / total[b]) if total[b] else None,
             "frac_pos": float(ysum[b] / total[b]) if total[b] else None} for b in range(n_bins)]


def expected_calibration_error(probs, y, n_bins: int = 10) -> float:
    """ECE = sum over bins of (bin size / n) * |fraction similar - mean predicted probability|."""
    bins = reliability_bins(probs, y, n_bins)
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] / n * abs(b["frac_pos"] - b["mean_prob"]) for b in bins if b["n"]))


def classification_metrics(scores, y, threshold: float, probs=None) -> dict:
    """AUC (sklearn), accuracy and F1 at ``threshold`` (match = score >= threshold) and, with ``probs``, ECE."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    s, y = _scores(scores), np.asarray(y, dtype=np.int64)
    pred = (s >= threshold).astype(np.int64)
    two = 0 < y.sum() < len(y)
    out = {"n_pairs": len(y), "positive_rate": float(y.mean()) if len(y) else math.nan,
           "auc": float(roc_auc_score(y, s)) if two else math.nan,
           "accuracy": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, zero_division=0.0)),
           "threshold": float(threshold)}
    if probs is not None:
        out["ece"] = expected_calibration_error(probs, y)
    return out


# --------------------------------------------------------------------------------------------
# the calibrator
# --------------------------------------------------------------------------------------------
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _probability_cut(s: np.ndarray, p: np.ndarray) -> float:
    """The score cut equivalent to "P(similar) >= 0.5" on the fitted scores (P is non-decreasing in the
    score for isotonic and for Platt with a positive slope): midway between the highest score below 0.5
    and the lowest at or above it."""
    distinct = np.unique(s)
    yes = s[p >= 0.5]
    if yes.size == 0:
        return float(np.nextafter(distinct[-1], np.inf))  # nothing matches
    lo = float(yes.min())
    below = distinct[distinct < lo]
    return (lo + float(below[-1])) / 2 if below.size else lo


def _no_worse_than_constant(s: np.ndarray, y: np.ndarray, cut: float) -> float:
    """``cut``, unless always answering "no" (a cut above every score) or always "yes" (at or below every
    score) is more accurate on these pairs: then that answer's cut."""
    acc = float(np.mean((s >= cut) == (y == 1)))
    pos = float(np.mean(y == 1))
    if acc >= max(pos, 1 - pos):
        return cut
    return float(s.min()) if pos > 0.5 else float(np.nextafter(s.max(), np.inf))


class Calibrator:
    """``Calibrator(method="isotonic"|"platt", objective="probability"|"f1"|"accuracy", positive_label=None)``.

    ``fit(scores, labels, query_path=None)`` learns ``threshold_`` and the score -> P(similar) map;
    ``predict_proba(scores)`` gives P(similar) per score (1-D), ``match(scores)`` score >= threshold_
    (objective ``probability``: the lowest score whose P(similar) is at least 0.5).
    ``save(path)`` / ``Calibrator.load(path)``: one JSON file; ``check_compatible(query_path)`` refuses
    a calibration fitted for another query path."""

    def __init__(self, method: str = "isotonic", objective: str = "probability", positive_label: float | None = None):
        self.method = method
        self.objective = objective
        self.positive_label = positive_label

    def fit(self, scores, labels, *, query_path: dict | None = None) -> Calibrator:
        if self.method not in METHODS:
            raise InputError(f"calibration method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        s = _scores(scores)
        y = binary_labels(labels, self.positive_label)
        if len(s) != len(y):
            raise InputError(f"got {len(s)} scores and {len(y)} labels; they must pair up")
        check_binary(y)
        if self.objective != "probability":
            self.threshold_, self.objective_value_ = best_threshold(s, y, self.objective)
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
            self.x_thresholds_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        else:
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=np.inf).fit(s[:, None], y)
            self.coef_, self.intercept_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        if self.objective == "probability":
            self.threshold_ = _no_worse_than_constant(s, y, _probability_cut(s, self.predict_proba(s)))
            self.objective_value_ = float(np.mean((s >= self.threshold_) == (y == 1)))  # its accuracy
        self.n_pairs_, self.n_positive_ = len(y), int(y.sum())
        self.query_path_ = None if query_path is None else dict(query_path)
        self.fit_metrics_ = classification_metrics(s, y, self.threshold_, self.predict_proba(s))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_pairs_") and not hasattr(self, "x_thresholds_") and not hasattr(self, "coef_"):
            from .errors import NotFittedError

            raise NotFittedError("this Calibrator is not fitted yet: call fit(scores, labels) first")

    def predict_proba(self, scores) -> np.ndarray:
        """P(similar) for each score (float64, 1-D; monotone non-decreasing in the score)."""
        self._check_fitted()
        s = _scores(np.atleast_1d(np.asarray(scores, dtype=np.float64)))
        if self.method == "isotonic":
            return np.interp(s, self.x_thresholds_, self.y_thresholds_)  # clips outside the fitted range
        from scipy.special import expit

        return expit(self.coef_ * s + self.intercept_)

    def match(self, scores) -> np.ndarray:
        self._check_fitted()
        return _scores(np.atleast_1d(np.asarray(scores, dtype=np.float64))) >= self.threshold_

    # -- persistence and the query-path check --------------------------------------------------
    def to_dict(self) -> dict:
        self._check_fitted()
        d = {"format": FORMAT, "version": FORMAT_VERSION, "method": self.method, "objective": self.objective,
             "positive_label": self.positive_label, "threshold": self.threshold_,
             "objective_value": self.objective_value_, "n_pairs": self.n_pairs_, "n_positive": self.n_positive_,
             "fit_metrics": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                             for k, v in self.fit_metrics_.items()},
             "query_path": self.query_path_}
        if self.method == "isotonic":
            d["isotonic"] = {"x": self.x_thresholds_.tolist(), "y": self.y_thresholds_.tolist()}
        else:
            d["platt"] = {"coef": self.coef_, "intercept": self.intercept_}
        return d

    def save(self, path: str | os.PathLike, *, query_path: dict | None = None) -> None:
        """Write the calibration as JSON, atomically; ``query_path`` replaces the one given to fit."""
        if query_path is not None:
            self.query_path_ = dict(query_path)
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibrator:
        d = read_json(path, "calibration file")
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            got = (d.get("format"), d.get("version")) if isinstance(d, dict) else type(d).__name__
            raise IndexFormatError(f"{path} is not an embedkit calibration of version {FORMAT_VERSION} "
                                   f"(format, version = {got!r})")
        try:
            obj = cls(d["method"], d["objective"], d["positive_label"])
            if obj.method == "isotonic":
                obj.x_thresholds_ = np.asarray(d["isotonic"]["x"], dtype=np.float64)
                obj.y_thresholds_ = np.asarray(d["isotonic"]["y"], dtype=np.float64)
                if obj.x_thresholds_.shape != obj.y_thresholds_.shape or obj.x_thresholds_.size == 0:
                    raise ValueError("isotonic x and y differ in length or are empty")
            elif obj.method == "platt":
                obj.coef_, obj.intercept_ = float(d["platt"]["coef"]), float(d["platt"]["intercept"])
            else:
                raise ValueError(f"unknown method {obj.method!r}")
            obj.threshold_ = float(d["threshold"])
            obj.objective_value_ = float(d["objective_value"])
            obj.n_pairs_, obj.n_positive_ = int(d["n_pairs"]), int(d["n_positive"])
            obj.fit_metrics_ = {k: (math.nan if v is None else v) for k, v in d["fit_metrics"].items()}
            obj.query_path_ = d["query_path"]
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"calibration file {path} is incomplete or corrupt: {e!r}") from None
        return obj

    def check_compatible(self, query_path: dict | str, *, where: str = "this index") -> None:
        """Raise IndexFormatError naming every field (model, pooling, reducer, ...) that differs between
        the query path this calibration was fitted for and ``query_path`` (a describe() dict, or a
        fingerprint string compared with the recorded ``fingerprint``).  No recorded path: accepted."""
        self._check_fitted()
        mine = self.query_path_
        if mine is None:
            return
        if isinstance(query_path, str):
            if mine.get("fingerprint") != query_path:
                raise IndexFormatError(f"the calibration was fitted for query path {mine.get('fingerprint')!r}, "
                                       f"{where} has {query_path!r}; refit it on labelled pairs "
                                       "(embedkit calibrate DIR --pairs FILE)")
            return
        a, b = _flatten(mine), _flatten(dict(query_path))
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            shown = "; ".join(f"{k}: calibration {a.get(k)!r}, {where} {b.get(k)!r}" for k in diff[:6])
            raise IndexFormatError(f"the calibration was fitted for another query path ({shown}); refit "
                                   "it on labelled pairs (embedkit calibrate DIR --pairs FILE)")

    def describe(self) -> dict:
        d = self.to_dict()
        d.pop("isotonic", None)
        return d

    def __repr__(self) -> str:
        return f"Calibrator(method={self.method!r}, objective={self.objective!r}, positive_label={self.positive_label!r})"
