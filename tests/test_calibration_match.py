"""Issue 19, defect 10: ``match`` is "calibrated P(similar) >= 0.5" by default and is never less accurate
on the calibration pairs than the better constant answer, even when the encoder barely separates the
classes (AUC ≈ 0.55, where the F1-maximising cut matched nearly everything)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from embedkit.calibration import Calibrator


def weak_pairs(n: int, seed: int):
    """Scores that barely separate the classes (AUC ≈ 0.55), 45 % positives (as the paraphrase set)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(int)
    s = np.clip(0.6 + 0.1 * (rng.standard_normal(n) + 0.18 * y), -1, 1)
    return s, y


def accuracy(pred, y):
    return float(np.mean(np.asarray(pred, bool) == (y == 1)))


@pytest.mark.parametrize("method", ["isotonic", "platt"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_is_never_worse_than_the_better_constant_on_the_calibration_pairs(method, seed):
    s, y = weak_pairs(3000, seed)
    assert 0.52 < roc_auc_score(y, s) < 0.58
    constant = max(np.mean(y), 1 - np.mean(y))
    cal = Calibrator(method).fit(s, y)
    assert cal.objective == "probability"
    assert accuracy(cal.match(s), y) >= constant
    f1 = Calibrator(method, "f1").fit(s, y)  # the old default: matches nearly everything, worse than "no"
    assert np.mean(f1.match(s)) > 0.9 and accuracy(f1.match(s), y) < constant


def test_match_is_probability_at_least_one_half():
    s, y = weak_pairs(3000, 5)
    rng = np.random.default_rng(5)
    strong = np.where(y == 1, 0.8, 0.4) + 0.1 * rng.standard_normal(len(y))  # a task the encoder separates
    for scores in (s, strong):
        cal = Calibrator().fit(scores, y)
        np.testing.assert_array_equal(cal.match(scores), cal.predict_proba(scores) >= 0.5)
        assert cal.to_dict()["objective"] == "probability"
    assert accuracy(cal.match(strong), y) > 0.95
    held_s, held_y = weak_pairs(3000, 99)  # unseen pairs of the weak task: about the constant, not far below
    weak = Calibrator().fit(s, y)
    assert accuracy(weak.match(held_s), held_y) >= max(np.mean(held_y), 1 - np.mean(held_y)) - 0.03


def test_the_cli_and_the_api_state_the_rule():
    from embedkit.cli.calibrate import calibrate
    from embedkit.server.schemas import HitOut, PairScore

    opt = next(p for p in calibrate.params if p.name == "objective")
    assert opt.default == "probability" and {"f1", "accuracy"} <= set(opt.type.choices)
    for model in (HitOut, PairScore):
        assert "P(similar) >= 0.5" in model.model_json_schema()["properties"]["match"]["description"]
