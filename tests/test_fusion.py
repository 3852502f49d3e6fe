"""Score fusion on toy cases computed by hand."""

from __future__ import annotations

import pytest

from embedkit.errors import InputError
from embedkit.fusion import WEIGHT_GRID, fuse, minmax, rrf, tune_weight, weighted


def test_rrf_toy():
    dense = [(0.9, "a"), (0.8, "b"), (0.1, "c")]
    lexical = [(12.0, "c"), (3.0, "a"), (1.0, "d")]
    out = rrf([dense, lexical], k=60)
    assert [d for _, d in out] == ["a", "c", "b", "d"]
    want = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}
    for s, d in out:
        assert s == pytest.approx(want[d], abs=1e-15)
    assert rrf([dense, lexical], k=60, top_k=2) == out[:2]
    assert rrf([dense, []]) == [(1 / 61, "a"), (1 / 62, "b"), (1 / 63, "c")]
    assert rrf([[], []]) == []


def test_minmax_and_weighted_toy():
    dense = [(0.9, "a"), (0.5, "b"), (0.1, "c")]
    lexical = [(10.0, "c"), (5.0, "d")]
    assert minmax(dense) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert minmax([(3.0, "x"), (3.0, "y")]) == {"x": 1.0, "y": 1.0}
    out = weighted(dense, lexical, 0.7)
    assert [d for _, d in out] == ["a", "b", "c", "d"]
    assert [s for s, _ in out] == pytest.approx([0.7, 0.35, 0.3, 0.0])
    out = weighted(dense, lexical, 0.2)
    assert [d for _, d in out] == ["c", "a", "b", "d"]
    assert [s for s, _ in out] == pytest.approx([0.8, 0.2, 0.1, 0.0])
    assert [d for _, d in weighted(dense, lexical, 1.0)][:3] == ["a", "b", "c"]
    assert [d for _, d in weighted(dense, lexical, 0.0)] == ["c", "a", "b", "d"]  # zeros: first seen first
    assert weighted(dense, [], 0.5, top_k=1) == [(0.5, "a")]
    batch = fuse([dense, dense], [lexical, []], weight=0.7, top_k=2)
    assert batch == [weighted(dense, lexical, 0.7, top_k=2), weighted(dense, [], 0.7, top_k=2)]


def test_tune_weight_toy():
    # the relevant doc r is last for dense, first for lexical: r wins while 1 - w > w, i.e. w <= 0.4;
    # at w = 0.5 the tie goes to the dense list's order (a first).  Ties in MRR go to the larger weight.
    dense = [[(1.0, "a"), (0.0, "r")]]
    lexical = [[(1.0, "r")]]
    t = tune_weight(dense, lexical, [["r"]])
    assert t["weight"] == 0.4 and t["score"] == pytest.approx(1.0)
    assert [g["weight"] for g in t["grid"]] == list(WEIGHT_GRID)
    assert [g["score"] for g in t["grid"]] == pytest.approx([1.0] * 5 + [0.5] * 6)
    # dense is right: the largest weight (1.0) is kept
    assert tune_weight([[(1.0, "r"), (0.5, "a")]], [[(1.0, "a")]], [["r"]])["weight"] == 1.0


def test_bad_input():
    for w in (-0.1, 1.5, "0.5", None, True):
        with pytest.raises(InputError, match="fusion weight"):
            weighted([], [], w)
    with pytest.raises(InputError, match="queries"):
        fuse([[]], [], weight=0.5)
    with pytest.raises(InputError, match="not one of"):
        fuse([[]], [[]], method="max")
    with pytest.raises(InputError, match="top_k"):
        rrf([[]], top_k=0)
    with pytest.raises(InputError, match="RRF k"):
        rrf([[]], k=-1)
    with pytest.raises(InputError, match="relevance labels"):
        tune_weight([[]], [[]], [])
    with pytest.raises(InputError, match="finite"):
        minmax([(float("nan"), "a")])
