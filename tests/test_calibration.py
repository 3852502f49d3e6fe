"""Calibrated similarity against scikit-learn oracles and hand computations; text normalisation."""

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from embedkit.calibration import (
    Calibrator,
    best_threshold,
    classification_metrics,
    expected_calibration_error,
    read_labelled_pairs,
    reliability_bins,
)
from embedkit.errors import IndexFormatError, InputError
from embedkit.textnorm import TextNormalizer

QP = {"encoder": {"model": "m3e-small", "pooling": "model", "max_length": 64}, "reducer": "whitening:256",
      "metric": "cosine", "normalizer": {"mode": "none"}, "fingerprint": "abc123"}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(0.55 + 0.2 * y + rng.normal(scale=0.12, size=400), -1, 1)
    return s, y


def test_isotonic_map_is_monotone_and_equals_sklearn(data):
    s, y = data
    cal = Calibrator("isotonic").fit(s, y)
    grid = np.linspace(-1.5, 1.5, 2001)
    p = cal.predict_proba(grid)
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1
    oracle = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y).predict(grid)
    np.testing.assert_allclose(p, oracle, atol=1e-12)


def test_platt_equals_logistic_regression(data):
    s, y = data
    cal = Calibrator("platt").fit(s, y)
    oracle = LogisticRegression(C=np.inf).fit(s[:, None], y).predict_proba(s[:, None])[:, 1]
    np.testing.assert_allclose(cal.predict_proba(s), oracle, atol=1e-6)
    assert np.all(np.diff(cal.predict_proba(np.sort(s))) >= 0)


@pytest.mark.parametrize("objective,metric", [("accuracy", accuracy_score), ("f1", f1_score)])
def test_threshold_maximises_the_objective_over_every_cut(data, objective, metric):
    s, y = data
    thr, value = best_threshold(s, y, objective)
    brute = max(metric(y, (s >= t).astype(int)) for t in np.unique(s))
    assert value == pytest.approx(brute) and metric(y, (s >= thr).astype(int)) == pytest.approx(brute)
    cal = Calibrator(objective=objective).fit(s, y)
    assert cal.threshold_ == thr
    np.testing.assert_array_equal(cal.match(s), s >= thr)


def test_ece_against_a_hand_computation():
    p = np.array([0.05, 0.15, 0.18, 0.62, 0.95, 0.95, 0.97, 1.0])
    y = np.array([0, 0, 1, 1, 1, 1, 0, 1])
    # bins (10 equal-width): [0,.1]: {.05|0}; (.1,.2]: {.15|0, .18|1}; (.6,.7]: {.62|1}; (.9,1]: {.95,.95,.97,1|1,1,0,1}
    hand = (1 * abs(0 - 0.05) + 2 * abs(0.5 - 0.165) + 1 * abs(1 - 0.62) + 4 * abs(0.75 - 0.9675)) / 8
    assert expected_calibration_error(p, y) == pytest.approx(hand)
    bins = reliability_bins(p, y)
    true, pred = calibration_curve(y, p, n_bins=10)  # the same binning as scikit-learn's diagram
    filled = [b for b in bins if b["n"]]
    np.testing.assert_allclose([b["frac_pos"] for b in filled], true)
    np.testing.assert_allclose([b["mean_prob"] for b in filled], pred)
    assert sum(b["n"] for b in bins) == 8


def test_classification_metrics_match_sklearn(data):
    s, y = data
    p = Calibrator().fit(s, y).predict_proba(s)
    m = classification_metrics(s, y, 0.6, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, s >= 0.6))
    assert m["f1"] == pytest.approx(f1_score(y, s >= 0.6))
    assert m["ece"] == pytest.approx(expected_calibration_error(p, y))


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_save_load_round_trip_and_mismatch_refusal(tmp_path, data, method):
    s, y = data
    cal = Calibrator(method, "accuracy").fit(s, y, query_path=QP)
    path = tmp_path / "calibration.json"
    cal.save(path)
    json.loads(path.read_text(encoding="utf-8"))  # plain JSON
    back = Calibrator.load(path)
    np.testing.assert_array_equal(back.predict_proba(s), cal.predict_proba(s))
    np.testing.assert_array_equal(back.match(s), cal.match(s))
    assert back.threshold_ == cal.threshold_ and back.query_path_ == QP
    back.check_compatible(json.loads(json.dumps(QP)))  # the same path: accepted
    back.check_compatible("abc123")
    other = dict(QP, reducer="pca:256", encoder=dict(QP["encoder"], model="albert-tiny-chinese"))
    with pytest.raises(IndexFormatError, match=r"encoder\.model: calibration 'm3e-small', this index "
                                               r"'albert-tiny-chinese'; reducer: calibration 'whitening:256'"):
        back.check_compatible(other)
    with pytest.raises(IndexFormatError, match="'abc123'.*'zzz'"):
        back.check_compatible("zzz")


def test_corrupt_or_foreign_calibration_files(tmp_path):
    p = tmp_path / "c.json"
    with pytest.raises(IndexFormatError, match="missing"):
        Calibrator.load(p)
    p.write_text('{"format": "something-else"}')
    with pytest.raises(IndexFormatError, match="not an embedkit calibration"):
        Calibrator.load(p)
    p.write_text('{"format": "embedkit-calibration", "version": 1, "method": "isotonic"}')
    with pytest.raises(IndexFormatError, match="incomplete or corrupt"):
        Calibrator.load(p)


def test_bad_inputs_give_the_numbers(data):
    s, y = data
    with pytest.raises(InputError, match="at least 20 labelled pairs, got 10 .6 similar, 4 not"):
        Calibrator().fit([0.1] * 10, [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    with pytest.raises(InputError, match="all one class: 30 pairs, 30 similar and 0 not"):
        Calibrator().fit(np.linspace(0, 1, 30), np.ones(30))
    with pytest.raises(InputError, match=r"not 0/1 \(values: 0, 2.5, 5\); pass positive_label"):
        Calibrator().fit(np.linspace(0, 1, 30), [0, 2.5, 5] * 10)
    graded = Calibrator(positive_label=2.5).fit(np.linspace(0, 1, 30), [0, 2.5, 5] * 10)
    assert graded.n_positive_ == 20
    with pytest.raises(InputError, match="got 400 scores and 399 labels"):
        Calibrator().fit(s, y[:-1])
    with pytest.raises(InputError, match="NaN"):
        Calibrator().fit(np.r_[s[:-1], np.nan], y)
    with pytest.raises(InputError, match="method 'beta'"):
        Calibrator("beta").fit(s, y)


def test_pairs_file_reader_counts_malformed_rows(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("借呗怎么还款\t借呗如何还钱\t1\nonly two\tfields\n\t空句子\t0\n好的\t行\tx\n你好\t您好\t1\n",
                 encoding="utf-8")
    ps = read_labelled_pairs(p)
    assert len(ps) == 2 and ps.skipped == {"malformed": 1, "empty_sentence": 1, "bad_label": 1}
    (tmp_path / "bad.tsv").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(InputError, match="no usable pairs"):
        read_labelled_pairs(tmp_path / "bad.tsv")


# --------------------------------------------------------------------------------------------
# text normalisation
# --------------------------------------------------------------------------------------------
def test_text_normalizer_modes():
    assert TextNormalizer("nfkc")(["ＡＢＣ１２３，ｘ？", "Straße"]) == ["abc123,x?", "strasse"]
    assert TextNormalizer("t2s")(["漢字轉換，臺灣銀行"]) == ["汉字转换，台湾银行"]
    assert TextNormalizer("s2t")(["汉字转换"]) == ["漢字轉換"]
    assert TextNormalizer()(["原样 ＡＢＣ"]) == ["原样 ＡＢＣ"] and TextNormalizer().spec == "none"
    d = TextNormalizer("t2s").describe()
    assert d["mode"] == "t2s" and d["opencc"] and d["config"] == "t2s.json"


def test_text_normalizer_bad_input():
    with pytest.raises(InputError, match="'zh' is not one of none, nfkc, t2s, s2t"):
        TextNormalizer("zh")
    with pytest.raises(InputError, match="list of strings"):
        TextNormalizer("nfkc")("单个字符串")
    with pytest.raises(InputError, match="must be str"):
        TextNormalizer("nfkc")([b"bytes"])
