"""STS metrics against scipy, and the small helpers around them."""

import math

import numpy as np
import pytest
from scipy import stats

from embedkit.errors import InputError
from embedkit.evaluation.metrics import cosine_scores, pearson, spearman, sts_scores, task_averages


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_and_pearson_match_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=500)
    y = 0.3 * x + rng.normal(size=500)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_spearman_with_ties_like_sts_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=400).astype(float)  # STS-B style 0..5 with many ties
    sims = labels / 5 + rng.normal(scale=0.4, size=400)
    assert spearman(sims, labels) == pytest.approx(stats.spearmanr(sims, labels).statistic, abs=1e-12)
    binary = rng.integers(0, 2, size=400).astype(float)  # ATEC / BQ / LCQMC style 0/1
    assert spearman(sims, binary) == pytest.approx(stats.spearmanr(sims, binary).statistic, abs=1e-12)


def test_constant_input_gives_nan_not_an_exception():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(pearson([1, 2, 3], [5, 5, 5]))


def test_bad_lengths_are_input_errors():
    with pytest.raises(InputError, match="equal length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="at least 2"):
        pearson([1], [1])


def test_cosine_scores_and_sts_scores():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 8)).astype(np.float32)
    b = rng.normal(size=(50, 8)).astype(np.float32)
    ref = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(cosine_scores(a, b), ref, rtol=1e-5, atol=1e-6)
    labels = rng.normal(size=50)
    out = sts_scores(cosine_scores(a, b), labels)
    assert out["n_pairs"] == 50
    assert out["spearman"] == pytest.approx(stats.spearmanr(ref, labels).statistic, abs=1e-5)
    with pytest.raises(InputError, match="same shape"):
        cosine_scores(a, b[:10])


def test_task_averages_plain_and_weighted_skip_nan():
    out = task_averages([0.5, 0.7, math.nan], [100, 300, 50])
    assert out["avg"] == pytest.approx(0.6)
    assert out["w_avg"] == pytest.approx((0.5 * 100 + 0.7 * 300) / 400)
    assert math.isnan(task_averages([math.nan], [1])["avg"])
