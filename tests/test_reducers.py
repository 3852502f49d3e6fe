"""Reducers against closed-form oracles: whitening's zero mean / identity covariance, the PCA-whitening
oracle, JL distance bounds, save -> load round trips."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from embedkit.errors import IndexFormatError, InputError, NotFittedError
from embedkit.reducers import (JLReducer, PCAReducer, Reducer, WhiteningReducer, compute_kernel_bias,
                               jl_min_dim, make_reducer, transform_and_normalize)

from .conftest import clustered_vectors


@pytest.fixture(scope="module")
def X():
    return clustered_vectors(800, 48, seed=1).astype(np.float64)


def _align_signs(a, b):
    s = np.sign((a * b).sum(axis=0))
    return b * s


def test_whitening_zero_mean_identity_covariance(X):
    Y = WhiteningReducer().fit_transform(X).astype(np.float64)
    assert Y.dtype == np.float64 and Y.shape == X.shape
    np.testing.assert_allclose(Y.mean(axis=0), 0, atol=2e-4)
    np.testing.assert_allclose(np.cov(Y.T), np.eye(X.shape[1]), atol=2e-3)


def test_whitening_k_components_identity_covariance(X):
    r = WhiteningReducer(16).fit(X)
    Y = r.transform(X)
    assert Y.shape == (800, 16) and Y.dtype == np.float32 and Y.flags.c_contiguous
    np.testing.assert_allclose(np.cov(Y.T.astype(np.float64)), np.eye(16), atol=2e-3)


def test_whitening_matches_sklearn_pca_whitening_up_to_sign(X):
    ours = WhiteningReducer(12).fit_transform(X).astype(np.float64)
    oracle = PCA(n_components=12, whiten=True, svd_solver="full").fit_transform(X)
    np.testing.assert_allclose(ours, _align_signs(ours, oracle), atol=2e-3)


def test_pca_matches_sklearn_pca_up_to_sign(X):
    ours = PCAReducer(12).fit_transform(X).astype(np.float64)
    oracle = PCA(n_components=12, svd_solver="full").fit_transform(X)
    np.testing.assert_allclose(ours, _align_signs(ours, oracle), atol=2e-3)
    # a rotation: variances descend, covariance diagonal
    c = np.cov(ours.T)
    assert np.all(np.diff(np.diag(c)) <= 1e-6)
    np.testing.assert_allclose(c - np.diag(np.diag(c)), 0, atol=1e-2 * c[0, 0])


def test_pure_functions_are_the_paper_math(X):
    kernel, bias, s = compute_kernel_bias(X, 8)
    assert kernel.shape == (48, 8) and bias.shape == (1, 48)
    mu = X.mean(axis=0, keepdims=True)
    u, s2, _ = np.linalg.svd(np.cov(X.T))
    np.testing.assert_allclose(kernel, (u @ np.diag(1 / np.sqrt(s2)))[:, :8])
    np.testing.assert_allclose(bias, -mu)
    Y = transform_and_normalize(X, kernel, bias)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1, atol=1e-9)
    np.testing.assert_allclose(WhiteningReducer(8).fit(X).transform(X), (X - mu) @ kernel, atol=1e-3)


def test_jl_preserves_pairwise_distances_within_promised_eps():
    rng = np.random.default_rng(7)
    n, d, eps = 60, 3000, 0.5
    X = rng.standard_normal((n, d))
    k = jl_min_dim(n, eps)
    assert k == int(4 * np.log(n) / (eps**2 / 2 - eps**3 / 3))  # the textbook bound, 196
    Y = JLReducer(k, random_state=3).fit_transform(X).astype(np.float64)
    iu = np.triu_indices(n, 1)
    dx = ((X[:, None] - X[None]) ** 2).sum(-1)[iu]
    dy = ((Y[:, None] - Y[None]) ** 2).sum(-1)[iu]
    ratio = dy / dx
    assert ratio.min() > 1 - eps and ratio.max() < 1 + eps, (ratio.min(), ratio.max())


def test_jl_matrix_is_gaussian_with_variance_one_over_k():
    r = JLReducer(400, random_state=0).fit(np.zeros((3, 500)))
    assert r.components_.shape == (400, 500)
    assert abs(r.components_.std() - 1 / np.sqrt(400)) < 0.002
    assert abs(r.components_.mean()) < 0.001
    again = JLReducer(400, random_state=0).fit(np.ones((3, 500)))
    np.testing.assert_array_equal(r.components_, again.components_)  # seeded


def test_jl_auto_uses_min_dim():
    X = np.random.default_rng(0).standard_normal((50, 2000))
    r = JLReducer("auto", eps=0.5).fit(X)
    assert r.n_components_ == jl_min_dim(50, 0.5)
    with pytest.raises(InputError, match="jl:auto needs"):
        JLReducer("auto", eps=0.1).fit(X)


@pytest.mark.parametrize("spec", ["none", "whitening:10", "pca:10", "jl:10"])
def test_save_load_round_trip_identical(tmp_path, X, spec):
    r = make_reducer(spec).fit(X)
    r.save(tmp_path)
    r2 = Reducer.load(tmp_path)
    assert type(r2) is type(r) and r2.spec == r.spec
    np.testing.assert_array_equal(r.transform(X), r2.transform(X))
    with np.load(tmp_path / "reducer.npz", allow_pickle=False) as z:  # plain arrays, no pickle
        assert all(z[k].dtype != object for k in z.files)


def test_k_larger_than_dim_rejected(X):
    with pytest.raises(InputError, match=r"whitening:64 .* dimensions \(48\)"):
        WhiteningReducer(64).fit(X)
    with pytest.raises(InputError, match=r"jl:49"):
        JLReducer(49).fit(X)


def test_k_larger_than_fitting_samples_rejected():
    X = np.random.default_rng(0).standard_normal((10, 48))
    with pytest.raises(InputError, match=r"rank at most 9"):
        WhiteningReducer(16).fit(X)


def test_rank_deficient_covariance_rejected():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 20))  # rank 5 in 20 dims
    with pytest.raises(InputError, match=r"rank-deficient \(rank 5 < k=10\)"):
        WhiteningReducer(10).fit(X)
    assert WhiteningReducer(5).fit(X).transform(X).shape == (200, 5)


def test_transform_checks(X):
    with pytest.raises(NotFittedError, match="not fitted"):
        WhiteningReducer(4).transform(X)
    r = WhiteningReducer(4).fit(X)
    with pytest.raises(InputError, match="X has 47 features, but WhiteningReducer was fitted with 48"):
        r.transform(X[:, :47])
    assert r.transform(X[0]).shape == (4,)
    with pytest.raises(InputError, match="NaN"):
        r.transform(np.full((2, 48), np.nan))


@pytest.mark.parametrize("spec,msg", [("whitening:0", "positive"), ("pca:abc", "not an integer"),
                                      ("svd:10", "kind must be one of"), ("jl", "jl needs a dimension"),
                                      ("none:5", "takes no dimension")])
def test_make_reducer_rejects_bad_specs(spec, msg):
    with pytest.raises(InputError, match=msg):
        make_reducer(spec)


def test_corrupt_or_missing_files(tmp_path, X):
    with pytest.raises(IndexFormatError, match="missing"):
        Reducer.load(tmp_path)
    WhiteningReducer(4).fit(X).save(tmp_path)
    (tmp_path / "reducer.npz").write_bytes(b"not a zip")
    with pytest.raises(IndexFormatError, match="corrupt"):
        Reducer.load(tmp_path)
    (tmp_path / "reducer.json").write_text("{")
    with pytest.raises(IndexFormatError, match="corrupt"):
        Reducer.load(tmp_path)
