"""beta/gamma-whitening and the auto reducer against closed forms: whitening / PCA / truncated SVD /
faiss.PCAMatrix equalities, the scikit-learn estimator contract, save -> load, auto's choice rule."""

import faiss
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import TruncatedSVD
from sklearn.pipeline import Pipeline

from embedkit.errors import InputError
from embedkit.reducers import (
    AutoReducer,
    JLReducer,
    PCAReducer,
    Reducer,
    WhiteningReducer,
    make_reducer,
    pair_spearman,
)

from .conftest import clustered_vectors


@pytest.fixture(scope="module")
def X():
    return clustered_vectors(600, 40, seed=3).astype(np.float64) + 2.0  # a non-zero mean matters for beta


def _align(ref, got):
    """Flip ``got``'s columns to ``ref``'s signs (eigenvectors are defined up to sign)."""
    return got * np.sign((ref * got).sum(axis=0))


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("spec,canonical", [
    ("whitening:256:beta=0.5,gamma=0.5", "whitening:256:beta=0.5,gamma=0.5"),
    ("whitening:16:beta=1,gamma=1", "whitening:16"), ("whitening:16:gamma=0.25", "whitening:16:gamma=0.25"),
    ("whitening:beta=0,gamma=0", "whitening:beta=0,gamma=0"), ("pca:8", "pca:8"), ("auto", "auto"),
    ("auto:128", "auto:128"), ("jl:auto", "jl:auto")])
def test_specs_parse_and_round_trip(spec, canonical):
    r = make_reducer(spec)
    assert r.spec == canonical and make_reducer(r.spec).spec == canonical


@pytest.mark.parametrize("spec,msg", [
    ("pca:10:beta=0.5", "pca takes no parameters"), ("whitening:8:beta=2", r"beta=2 must be in \[0, 1\]"),
    ("whitening:8:delta=1", "unknown parameter 'delta'"), ("whitening:8:beta=x", "'x' is not a number"),
    ("whitening:8:beta=0.5:gamma=1", "once"), ("auto:0", "positive"), ("whitening:8:beta", "name=value")])
def test_bad_specs(spec, msg):
    with pytest.raises(InputError, match=msg):
        make_reducer(spec)


def test_beta_gamma_one_is_whitening_and_beta_one_gamma_zero_is_pca(X):
    np.testing.assert_array_equal(make_reducer("whitening:12:beta=1,gamma=1").fit_transform(X),
                                  WhiteningReducer(12).fit_transform(X))
    np.testing.assert_array_equal(make_reducer("whitening:12:beta=1,gamma=0").fit_transform(X),
                                  PCAReducer(12).fit_transform(X))


def test_beta_gamma_zero_is_truncated_svd_and_keeps_cosines_at_full_k(X):
    """beta = gamma = 0: no centring, no scaling -- the top-k right singular vectors of X itself."""
    ours = make_reducer("whitening:10:beta=0,gamma=0").fit_transform(X).astype(np.float64)
    oracle = TruncatedSVD(10, algorithm="arpack", random_state=0).fit_transform(X)
    np.testing.assert_allclose(ours, _align(ours, oracle), rtol=1e-4, atol=1e-3 * np.abs(oracle).max())
    full = make_reducer("whitening:beta=0,gamma=0").fit_transform(X).astype(np.float64)  # a pure rotation
    np.testing.assert_allclose(_cos(full[:300], full[300:]), _cos(X[:300], X[300:]), atol=1e-5)


@pytest.mark.parametrize("beta,gamma", [(0.5, 0.5), (0.0, 1.0), (0.5, 0.0)])
def test_general_beta_gamma_matches_the_closed_form(X, beta, gamma):
    shifted = X - beta * X.mean(0)
    lam, v = np.linalg.eigh(shifted.T @ shifted / (len(X) - 1))
    lam, v = lam[::-1][:9], v[:, ::-1][:, :9]
    oracle = shifted @ v * lam ** (-gamma / 2)
    ours = WhiteningReducer(9, beta=beta, gamma=gamma).fit_transform(X).astype(np.float64)
    np.testing.assert_allclose(ours, _align(ours, oracle), rtol=1e-4, atol=1e-4 * np.abs(oracle).max())


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_beta_one_matches_faiss_pca_matrix_up_to_column_signs(X, gamma):
    """faiss.PCAMatrix(eigen_power=-gamma/2) whitens with the unnormalised scatter matrix, whose
    eigenvalues are (n - 1) times ours: its output times (n - 1)^(gamma/2) is ours."""
    x32 = np.ascontiguousarray(X, dtype=np.float32)
    pca = faiss.PCAMatrix(40, 12, -gamma / 2)
    pca.train(x32)
    oracle = pca.apply(x32).astype(np.float64) * (len(X) - 1) ** (gamma / 2)
    ours = WhiteningReducer(12, beta=1.0, gamma=gamma).fit_transform(X).astype(np.float64)
    np.testing.assert_allclose(ours, _align(ours, oracle), rtol=1e-3, atol=2e-3 * np.abs(oracle).max())


@pytest.mark.parametrize("spec", ["none", "whitening:8", "whitening:8:beta=0.5,gamma=0.5", "pca:8", "jl:8",
                                  "jl:auto", "auto:16"])
def test_sklearn_contract_fit_never_writes_parameters(X, spec):
    r = make_reducer(spec)
    if spec == "jl:auto":
        r.set_params(eps=0.9)
    before = r.get_params()
    fit_kw = {"tune": (X[:100], X[100:200], np.arange(100.0))} if r.kind == "auto" else {}
    r.fit(X[:5] if spec == "jl:auto" else X, **fit_kw)  # 5 points at eps 0.9 need 39 <= 40 dimensions
    assert r.get_params() == before  # JLReducer('auto') keeps n_components='auto'
    c = clone(r)
    assert c.get_params() == before and not hasattr(c, "n_features_in_")
    assert r.spec == make_reducer(spec).spec


def test_jl_auto_is_sklearn_gaussian_random_projection_auto():
    from sklearn.random_projection import GaussianRandomProjection

    X = np.random.default_rng(0).standard_normal((30, 200))
    r = JLReducer("auto", eps=0.9, random_state=5).fit(X[:30])
    grp = GaussianRandomProjection(n_components="auto", eps=0.9, random_state=5).fit(X[:30])
    assert r.n_components == "auto" and r.output_dim == grp.n_components_
    np.testing.assert_array_equal(r.components_, grp.components_.astype(np.float32))


def test_pipeline_use(X):
    pipe = Pipeline([("pca", PCAReducer(20)), ("white", WhiteningReducer(10, beta=0.5, gamma=0.5))]).fit(X)
    Y = pipe.transform(X)
    step = WhiteningReducer(10, beta=0.5, gamma=0.5).fit(PCAReducer(20).fit_transform(X))
    np.testing.assert_allclose(Y, step.transform(PCAReducer(20).fit(X).transform(X)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", ["whitening:8:beta=0.5,gamma=0.5", "whitening:beta=0,gamma=0.5"])
def test_beta_gamma_save_load_round_trip(tmp_path, X, spec):
    r = make_reducer(spec).fit(X)
    r.save(tmp_path)
    r2 = Reducer.load(tmp_path)
    assert r2.spec == spec and (r2.beta, r2.gamma) == (r.beta, r.gamma)
    np.testing.assert_array_equal(r.transform(X), r2.transform(X))


# --------------------------------------------------------------------------------------------
# auto
# --------------------------------------------------------------------------------------------
def _tune(X, seed=0):
    """Pairs whose label is the cosine after whitening fitted on X: whitening wins on these."""
    rng = np.random.default_rng(seed)
    ia, ib = rng.integers(0, len(X), 200), rng.integers(0, len(X), 200)
    w = WhiteningReducer().fit(X)
    return X[ia], X[ib], _cos(w.transform(X[ia]), w.transform(X[ib]))


def test_auto_picks_the_best_candidate_by_spearman_on_the_tuning_pairs(X):
    tune = _tune(X)
    auto = AutoReducer().fit(X, tune=tune)
    assert auto.choice_ == "whitening" and auto.output_dim == 40
    specs = [g["spec"] for g in auto.grid_]
    assert specs[0] == "none" and "pca" in specs and "whitening:beta=0.5,gamma=0.5" in specs
    assert len(specs) == 1 + 9  # d = 40: only the full k of {64, 128, 256, full}
    for g in auto.grid_:  # each grid entry is the candidate fitted on X, scored on the pairs
        oracle = pair_spearman(make_reducer(g["spec"]).fit(X), *tune)
        assert g["spearman"] == pytest.approx(oracle, abs=1e-9)
    assert auto.grid_[specs.index("whitening")]["spearman"] == pytest.approx(1.0)
    np.testing.assert_array_equal(auto.transform(X), WhiteningReducer().fit(X).transform(X))


def test_auto_k_grid_and_tie_rule():
    X = clustered_vectors(700, 300, rank=300, seed=0).astype(np.float64)
    auto = AutoReducer(tie_tol=2.0, betas=(1.0,), gammas=(1.0, 0.0))  # everything ties: smallest k wins
    auto.fit(X, tune=(X[:50], X[50:100], np.arange(50.0)))
    assert [g["k"] for g in auto.grid_] == [300, 64, 64, 128, 128, 256, 256, 300, 300]
    assert auto.choice_ == "whitening:64" and auto.output_dim == 64
    capped = AutoReducer(100, betas=(1.0,), gammas=(1.0,)).candidates(300)
    assert [(r.spec, k) for r, k, *_ in capped] == [("whitening:64", 64), ("whitening:100", 100)]


def test_auto_save_load_round_trip_keeps_grid_and_choice(tmp_path, X):
    auto = AutoReducer().fit(X, tune=_tune(X))
    auto.save(tmp_path)
    back = Reducer.load(tmp_path)
    assert isinstance(back, AutoReducer) and back.choice_ == auto.choice_ and back.spec == "auto"
    assert [g["spec"] for g in back.grid_] == [g["spec"] for g in auto.grid_]
    assert back.describe()["choice"] == "whitening" and back.describe()["n_tune_pairs"] == 200
    np.testing.assert_array_equal(back.transform(X), auto.transform(X))


def test_auto_bad_input(X):
    with pytest.raises(InputError, match="--tune-pairs FILE"):
        make_reducer("auto").fit(X)
    with pytest.raises(InputError, match="same number of pairs"):
        AutoReducer().fit(X, tune=(X[:10], X[:9], np.arange(10.0)))
    with pytest.raises(InputError, match="not all equal"):
        AutoReducer().fit(X, tune=(X[:10], X[10:20], np.ones(10)))
    with pytest.raises(InputError, match="features"):
        AutoReducer().fit(X, tune=(X[:10, :5], X[10:20, :5], np.arange(10.0)))
    with pytest.raises(InputError, match=r"auto:64 asks for more components .* \(40\)"):
        AutoReducer(64).fit(X, tune=_tune(X))
