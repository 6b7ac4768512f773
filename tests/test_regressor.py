"""Behaviour of the regressors: HierarchicalEmbeddingMoERegressor and
MixtureOfExpertsRegressor (scikit-learn's own checks run in test_common.py)."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import hemoe_sk
from hemoe_sk import HierarchicalEmbeddingMoERegressor, MixtureOfExpertsRegressor
from hemoe_sk.node import decide_split


def piecewise(n=400, seed=0, noise=0.1):
    """Two linear regimes split on the first feature, on a large scale."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    y = np.where(X[:, 0] > 0, 30 * X[:, 1] + 100, -20 * X[:, 1] - 50)
    return X, y + noise * rng.randn(n)


X, Y = piecewise()
X_TEST, Y_TEST = piecewise(300, seed=1)


def tree(**params):
    base = dict(
        clusterer=KMeans(n_init=2),
        max_depth=1,
        n_clusters_grid=(2,),
        min_cluster_size=30,
        embedder__hidden_dims=(16,),
        max_epochs=30,
        expert_max_epochs=10,
        lr=0.01,
        random_state=0,
    )
    return HierarchicalEmbeddingMoERegressor(**{**base, **params})


def moe(**params):
    base = dict(n_experts=2, expert_hidden=(16,), gate_hidden=(8,), max_epochs=40,
                lr=0.01, random_state=0)
    return MixtureOfExpertsRegressor(**{**base, **params})


@pytest.fixture(scope="module")
def forced():
    """A tree forced to split (split_test="none"), soft routing."""
    return tree(split_test="none").fit(X, Y)


# -- accuracy ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: tree(max_depth=0), lambda: tree(split_test="none"), moe,
             lambda: moe(loss="mse"), lambda: moe(gating="topk", k=1, n_experts=3)],
    ids=["base", "tree", "moe-nll", "moe-mse", "moe-topk"],
)
def test_beats_a_constant_on_piecewise_linear_data(make):
    reg = make().fit(X, Y)
    pred = reg.predict(X_TEST)
    assert pred.shape == Y_TEST.shape and pred.dtype == np.float64
    # a constant predictor scores R^2 <= 0; the targets' scale is ~100
    assert r2_score(Y_TEST, pred) > 0.6


def test_diabetes_above_a_floor():
    X_d, y_d = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X_d, y_d, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    reg = tree(max_epochs=40, lr=3e-3).fit(scaler.transform(X_tr), y_tr)
    # a constant scores <= 0; linear models reach about 0.35 on this split
    assert reg.score(scaler.transform(X_te), y_te) > 0.25


# -- routing and the tree --------------------------------------------------------


def test_forced_split_has_leaves_and_predicts(forced):
    assert forced.n_leaves_ > 1 and forced.depth_ == 1
    leaves = forced.apply(X_TEST)
    assert set(np.unique(leaves)) <= set(forced.tree_.leaves)
    assert forced.decision_path(X_TEST).shape == (len(X_TEST), forced.tree_.node_count)
    text = forced.export_text()
    assert "R^2" in text and "classes=" not in text
    assert np.isfinite(forced.predict(X_TEST)).all()


def test_soft_and_hard_routing(forced):
    soft = forced.predict(X_TEST)
    hard = clone_params(forced, routing="hard").predict(X_TEST)
    assert not np.allclose(soft, hard)
    # hard routing is exactly the reached leaf's own prediction
    leaves = forced.apply(X_TEST[:20])
    for i, leaf in enumerate(leaves):
        node = forced.tree_.nodes[leaf]
        out = node.classifier.predict_proba(X_TEST[i:i + 1], None, None)
        assert hard[i] == pytest.approx(out[0, 0] * forced.y_scale_[0] + forced.y_mean_[0])
    # both beat a constant by far
    assert r2_score(Y_TEST, soft) > 0.6 and r2_score(Y_TEST, hard) > 0.6


def clone_params(fitted, **params):
    """The fitted model with other prediction-time parameters (no refit)."""
    again = pickle.loads(pickle.dumps(fitted))
    return again.set_params(**params)


def test_a_real_split_is_kept_and_helps_on_two_regimes():
    """With the bootstrap test (and 160 held-out rows), the split on the
    regimes is kept, and it beats the base network."""
    X_big, Y_big = piecewise(800, seed=2)
    split = tree(max_epochs=10, routing="hard").fit(X_big, Y_big)
    base = tree(max_epochs=10, max_depth=0).fit(X_big, Y_big)
    decision = split.tree_.nodes[0].search["decision"]
    assert decision is not None and decision.test == "bootstrap"
    assert split.n_leaves_ == 2 and decision.keep and decision.p_value < 0.05
    # the two leaves are the two regimes
    leaves = split.apply(X_TEST)
    for leaf in np.unique(leaves):
        side = X_TEST[leaves == leaf, 0] > 0
        assert max(side.mean(), 1 - side.mean()) > 0.9
    assert split.score(X_TEST, Y_TEST) > base.score(X_TEST, Y_TEST) + 0.05


@pytest.mark.parametrize("expert", ["head", Ridge(alpha=1e-3)], ids=["head", "ridge"])
def test_other_experts(expert):
    reg = tree(split_test="none", expert=expert).fit(X, Y)
    assert reg.n_leaves_ == 2
    assert reg.score(X_TEST, Y_TEST) > 0.5


# -- shapes and seeds -------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: tree(split_test="none"), moe], ids=["tree", "moe"])
def test_two_d_targets_keep_their_shape(make):
    Y2 = np.c_[Y, -0.01 * Y + 3]
    reg = make().fit(X, Y2)
    assert reg.predict(X_TEST).shape == (len(X_TEST), 2) and reg.n_outputs_ == 2
    col = make().fit(X, Y[:, None])
    assert col.predict(X_TEST).shape == (len(X_TEST), 1)
    assert r2_score(np.c_[Y_TEST, -0.01 * Y_TEST + 3], reg.predict(X_TEST)) > 0.7


@pytest.mark.parametrize("make", [lambda: tree(split_test="none"), moe], ids=["tree", "moe"])
def test_same_seed_same_model(make):
    a = make().fit(X, Y).predict(X_TEST)
    b = make().fit(X, Y).predict(X_TEST)
    np.testing.assert_array_equal(a, b)
    c = make().set_params(random_state=1).fit(X, Y).predict(X_TEST)
    assert not np.array_equal(a, c)


# -- persistence --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tree", "moe"])
def test_pickle_joblib_and_safe_format_round_trip(forced, which, tmp_path):
    reg = forced if which == "tree" else moe(max_epochs=5).fit(X, Y)
    expected = reg.predict(X_TEST)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X_TEST), expected)
    joblib.dump(reg, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict(X_TEST), expected)
    loaded = hemoe_sk.load(hemoe_sk.save(reg, tmp_path / "m.hemoe"))
    assert type(loaded) is type(reg) and repr(loaded) == repr(reg)
    np.testing.assert_array_equal(loaded.predict(X_TEST), expected)


# -- clear errors -------------------------------------------------------------------


@pytest.mark.parametrize("make", [tree, moe], ids=["tree", "moe"])
@pytest.mark.parametrize(
    "y, match",
    [
        (np.r_[np.nan, Y[1:]], "NaN"),
        (np.r_[np.inf, Y[1:]], "infinity"),
        (np.array(["a"] * len(Y), dtype=object), "could not convert|numeric"),
        (np.array(["a"] * len(Y)), "numeric"),
        (Y[:10], "inconsistent numbers of samples"),
        (np.zeros((len(Y), 2, 2)), "dim 3"),
    ],
    ids=["nan", "inf", "object", "str", "length", "3d"],
)
def test_bad_targets_are_clear_value_errors(make, y, match):
    with pytest.raises(ValueError, match=match):
        make().fit(X, y)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(split_signal="confusion"), "split_signal='confusion' groups classes"),
        (dict(split_test="mcnemar"), "mcnemar"),
        (dict(refine_epochs=2), "refine_epochs"),
        (dict(expert_kl=0.5), "expert_kl"),
    ],
)
def test_classification_only_options_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        tree(**params).fit(X, Y)


def test_guided_gating_is_refused_for_regression():
    with pytest.raises(ValueError, match="guided"):
        moe(gating="guided").fit(X, Y)


# -- sample_weight (MixtureOfExpertsRegressor) ----------------------------------

#: One batch holds the whole set and the soft gate draws no noise: weighting
#: a row is then exactly repeating it (see docs/weights.rst).
MOE_FULL_BATCH = dict(batch_size=4096, max_epochs=15)


@pytest.mark.parametrize("loss", ["mixture_nll", "mse"])
def test_moe_integer_weights_equal_repeated_rows(loss):
    X_s, y_s = X[:120], Y[:120]
    sw = np.random.RandomState(0).randint(0, 4, len(y_s))  # zeros included
    weighted = moe(loss=loss, **MOE_FULL_BATCH).fit(X_s, y_s, sample_weight=sw)
    repeated = moe(loss=loss, **MOE_FULL_BATCH).fit(X_s.repeat(sw, 0), y_s.repeat(sw))
    unweighted = moe(loss=loss, **MOE_FULL_BATCH).fit(X_s, y_s)
    np.testing.assert_allclose(weighted.y_mean_, repeated.y_mean_, rtol=1e-12)
    np.testing.assert_allclose(weighted.y_scale_, repeated.y_scale_, rtol=1e-12)
    p_w = weighted.predict(X_TEST)
    np.testing.assert_allclose(p_w, repeated.predict(X_TEST), rtol=1e-5, atol=1e-3)
    # ... and the weights did change the fit (targets are ~100 in scale).
    assert np.abs(unweighted.predict(X_TEST) - p_w).max() > 0.1


def test_moe_zero_weights_are_removed_rows_exactly():
    sw = np.ones(len(Y))
    sw[::3] = 0.0
    weighted = moe(max_epochs=5).fit(X, Y, sample_weight=sw)
    removed = moe(max_epochs=5).fit(X[sw > 0], Y[sw > 0])
    np.testing.assert_array_equal(weighted.predict(X_TEST), removed.predict(X_TEST))
    ones = moe(max_epochs=5).fit(X, Y, sample_weight=np.ones(len(Y)))
    plain = moe(max_epochs=5).fit(X, Y)
    np.testing.assert_array_equal(ones.predict(X_TEST), plain.predict(X_TEST))


@pytest.mark.parametrize(
    "sample_weight, match",
    [
        (-np.ones(len(Y)), "Negative"),
        (np.full(len(Y), np.nan), "NaN"),
        (np.ones(len(Y) - 1), "sample_weight"),
        (np.zeros(len(Y)), "at least one non-zero"),
    ],
    ids=["negative", "nan", "length", "all-zero"],
)
def test_moe_bad_sample_weight_is_a_clear_value_error(sample_weight, match):
    with pytest.raises(ValueError, match=match):
        moe(max_epochs=1).fit(X, Y, sample_weight=sample_weight)


def test_real_valued_split_test():
    rng = np.random.RandomState(0)
    unsplit = -rng.rand(200)
    better = unsplit + 0.2
    d = decide_split(better, unsplit)
    assert d.keep and d.gain == pytest.approx(0.2) and d.wins == 200
    assert not decide_split(unsplit, better).keep
    noise = unsplit + 0.01 * rng.randn(200)
    assert not decide_split(noise, unsplit, min_gain=0.05).keep
    with pytest.raises(ValueError, match="mcnemar"):
        decide_split(better, unsplit, test="mcnemar")
