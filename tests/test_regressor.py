"""Behaviour of the regressors: HierarchicalEmbeddingMoERegressor and
MixtureOfExpertsRegressor (scikit-learn's own checks run in test_common.py)."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
from _helpers import CLASSIC_NET, weighted_vs_repeated
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
        **CLASSIC_NET,
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
    # The regressor's nodes record their training like the classifier's: the
    # root on its fit part, each leaf's search expert on its share of it,
    # then the leaf's refit on all of its rows.
    (root,) = forced.tree_.nodes[0].training
    assert root.stage == "root network (fit part)" and root.epochs == 30
    leaves = [forced.tree_.nodes[i] for i in forced.tree_.leaves]
    assert sum(leaf.training[0].n_rows for leaf in leaves) == root.n_rows
    for leaf in leaves:
        search, refit = leaf.training
        assert "K=2 search" in search.stage and search.epochs == refit.epochs == 10
        assert refit.n_rows == leaf.n_samples


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
    from sklearn.utils._param_validation import InvalidParameterError

    est = moe(gating="guided")
    # Refused by the parameter constraints, before anything is trained.
    with pytest.raises(
        InvalidParameterError, match=r"'gating' parameter .* among .*Got 'guided'"
    ):
        est.fit(X, Y)
    assert not hasattr(est, "net_")


# -- sample_weight (MixtureOfExpertsRegressor) ----------------------------------

#: One batch holds the whole set and the soft gate draws no noise: weighting
#: a row is then exactly repeating it (see docs/weights.rst).
MOE_FULL_BATCH = dict(early_stopping=0.0, batch_size=4096, max_epochs=15)


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


# -- sample_weight (the hierarchical regressor) -----------------------------------

#: Weighting is exactly repeating here: the whole set in one batch, no
#: dropout, no split of the rows.
FULL_BATCH_TREE = dict(early_stopping=0.0, max_depth=0, batch_size=4096, embedder__dropout=0.0)


def test_integer_weights_equal_repeated_rows():
    sw = np.random.RandomState(0).randint(0, 4, len(Y))  # zeros included
    weighted = tree(**FULL_BATCH_TREE).fit(X, Y, sample_weight=sw)
    repeated = tree(**FULL_BATCH_TREE).fit(X.repeat(sw, 0), Y.repeat(sw))
    unweighted = tree(**FULL_BATCH_TREE).fit(X, Y)
    np.testing.assert_allclose(weighted.y_mean_, repeated.y_mean_)
    np.testing.assert_allclose(weighted.y_scale_, repeated.y_scale_)
    p_w, p_r = weighted.predict(X_TEST), repeated.predict(X_TEST)
    # float32 nets on targets of scale ~50: agreement to float rounding
    np.testing.assert_allclose(p_w, p_r, atol=1e-3 * Y.std())
    # ... and the weights did change the fit.
    assert np.abs(unweighted.predict(X_TEST) - p_w).max() > 0.1


def test_unit_weights_are_the_unweighted_fit_exactly():
    plain = tree(**FULL_BATCH_TREE).fit(X, Y).predict(X_TEST)
    ones = tree(**FULL_BATCH_TREE).fit(X, Y, sample_weight=np.ones(len(Y)))
    np.testing.assert_array_equal(ones.predict(X_TEST), plain)


def test_weight_equivalence_on_the_sklearn_check_data_without_dropout():
    """scikit-learn's check_sample_weight_equivalence_on_dense_data (an
    expected failure in test_common.py only because of the default dropout),
    on its own data, at a float32 tolerance: the check asks rtol=1e-7, and
    the two fits differed by 2e-8 relative on one machine, a margin of 5x
    that other machines' float32 kernels do not keep. rtol=1e-5 is 500x the
    measured difference; a real inequivalence (the unweighted fit) is 100x
    larger still."""
    est = tree(max_epochs=10, embedder__dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # too few rows to split
        p_w, p_r = weighted_vs_repeated(est, "predict")
    np.testing.assert_allclose(p_w, p_r, rtol=1e-5)


def test_zero_weight_equals_removed_rows_in_a_split_tree():
    """Rows of weight 0 are dropped before anything is drawn, so even a split
    tree (held-out split, K search, KMeans router, refit) is the same."""
    keep = np.random.RandomState(1).rand(len(Y)) > 0.25
    params = dict(split_test="none", max_epochs=10, expert_max_epochs=5)
    weighted = tree(**params).fit(X, Y, sample_weight=keep.astype(float))
    removed = tree(**params).fit(X[keep], Y[keep])
    assert weighted.n_leaves_ == removed.n_leaves_ == 2
    np.testing.assert_array_equal(weighted.predict(X_TEST), removed.predict(X_TEST))


def test_weights_reach_the_router_the_search_and_the_split_test():
    seen = []

    class RecordingKMeans(KMeans):
        def fit(self, X, y=None, sample_weight=None):
            seen.append(None if sample_weight is None else np.asarray(sample_weight))
            return super().fit(X, y, sample_weight=sample_weight)

    params = dict(clusterer=RecordingKMeans(n_init=2), max_epochs=10,
                  expert_max_epochs=5)
    plain = tree(**params).fit(X, Y)
    assert seen and all(s is None for s in seen)
    seen.clear()
    doubled = tree(**params).fit(X, Y, sample_weight=np.full(len(Y), 2.0))
    assert seen and all(s is not None and (s == 2.0).all() for s in seen)
    d_plain = plain.tree_.nodes[0].search["decision"]
    d_double = doubled.tree_.nodes[0].search["decision"]
    # the split test counts weights: every held-out row twice
    assert d_double.n == 2 * d_plain.n
    assert d_double.gain == pytest.approx(d_plain.gain, rel=1e-3, abs=1e-5)
    # a constant weight changes neither the losses' means nor the R^2
    for k, score in plain.tree_.nodes[0].search["scores"].items():
        assert doubled.tree_.nodes[0].search["scores"][k] == pytest.approx(score, abs=1e-3)


def test_weights_standardise_the_targets():
    sw = np.where(X[:, 0] > 0, 3.0, 1.0)
    reg = tree(max_depth=0, max_epochs=2).fit(X, Y, sample_weight=sw)
    mean = np.average(Y, weights=sw)
    assert reg.y_mean_[0] == pytest.approx(mean)
    assert reg.y_scale_[0] == pytest.approx(np.sqrt(np.average((Y - mean) ** 2, weights=sw)))


@pytest.mark.parametrize(
    "sample_weight, match",
    [
        (-np.ones(len(Y)), "Negative values in data passed to `sample_weight`"),
        (np.r_[np.nan, np.ones(len(Y) - 1)], "NaN"),
        (np.r_[np.inf, np.ones(len(Y) - 1)], "infinity"),
        (np.ones(len(Y) - 1), "sample_weight.shape"),
        (np.zeros(len(Y)), "at least one non-zero"),
        (np.r_[1.0, np.zeros(len(Y) - 1)], "got 1"),
    ],
    ids=["negative", "nan", "inf", "length", "all-zero", "one-positive"],
)
def test_bad_sample_weight_is_a_clear_value_error(sample_weight, match):
    with pytest.raises(ValueError, match=match):
        tree(max_depth=0, max_epochs=1).fit(X, Y, sample_weight=sample_weight)


def test_class_weight_is_still_refused():
    with pytest.raises(ValueError, match="class_weight='balanced' weighs classes"):
        tree(class_weight="balanced").fit(X, Y, sample_weight=np.ones(len(Y)))


def test_weighted_real_valued_split_test_counts_weights_as_rows():
    rng = np.random.RandomState(0)
    unsplit = -rng.rand(120)
    split = unsplit + 0.05 * rng.randn(120) + 0.01
    w = rng.randint(1, 4, 120)
    for test in ("bootstrap", "margin"):
        d = decide_split(split, unsplit, test=test, sample_weight=w)
        r = decide_split(np.repeat(split, w), np.repeat(unsplit, w), test=test)
        assert d.n == r.n and d.wins == r.wins and d.losses == r.losses
        assert d.gain == pytest.approx(r.gain) and d.min_gain == pytest.approx(r.min_gain)
        if test == "bootstrap":  # resampled differently, same distribution
            assert d.p_value == pytest.approx(r.p_value, abs=0.03)
    # weights on the rows the split wins turn a rejected split into a kept one
    d = split - unsplit
    lean = decide_split(split - 0.01, unsplit)
    heavy = decide_split(split - 0.01, unsplit, sample_weight=np.where(d > 0.01, 5.0, 1.0))
    assert not lean.keep and heavy.keep
    with pytest.raises(ValueError, match="finite non-negative"):
        decide_split(split, unsplit, sample_weight=-w)


# -- scoring -------------------------------------------------------------------------


def test_mse_scoring_ranks_as_r2_and_shows_minus_mse():
    """R^2 and -MSE read the same per-row outcomes and rank K alike on the
    same rows: the same tree, with R^2 = 1 - MSE / var(held-out targets)."""
    params = dict(n_clusters_grid=(2, 3), max_epochs=10, expert_max_epochs=5)
    r2 = tree(**params).fit(X, Y)
    mse = tree(scoring="neg_mean_squared_error", **params).fit(X, Y)
    np.testing.assert_array_equal(r2.predict(X_TEST), mse.predict(X_TEST))
    s_r2, s_mse = (m.tree_.nodes[0].search["scores"] for m in (r2, mse))
    assert set(s_r2) == set(s_mse) == {"K=1", "K=2", "K=3"}
    variance = [-s_mse[k] / (1 - s_r2[k]) for k in s_r2]
    np.testing.assert_allclose(variance, variance[0], rtol=1e-6)
    assert "search (held-out weighted -MSE)" in mse.export_text()
    assert r2.tree_.nodes[0].search["decision"].gain == pytest.approx(
        mse.tree_.nodes[0].search["decision"].gain
    )


def test_mae_scoring_reads_absolute_errors():
    reg = tree(scoring="neg_mean_absolute_error", max_epochs=10,
               expert_max_epochs=5).fit(X, Y)
    scores = reg.tree_.nodes[0].search["scores"]
    assert all(s < 0 for s in scores.values())
    text = reg.export_text()
    assert "-MAE" in text and "R^2" not in text
    out, target = np.array([[0.5], [-1.0]]), np.array([[0.0], [1.0]])
    np.testing.assert_array_equal(reg._row_outcomes(out, target), [-0.5, -2.0])
    for leaf in reg.tree_.leaves:
        assert reg.tree_.nodes[leaf].train_accuracy < 0
    assert reg.score(X_TEST, Y_TEST) > 0.5


@pytest.mark.parametrize("scoring", ["accuracy", "neg_root_mean_squared_error", len])
def test_other_scorings_are_refused(scoring):
    with pytest.raises(ValueError, match="'scoring' parameter .* must be a str among"):
        tree(scoring=scoring).fit(X, Y)


def test_scoring_and_weights_survive_save_and_load(tmp_path):
    reg = tree(scoring="neg_mean_absolute_error", split_test="none", max_epochs=5,
               expert_max_epochs=2).fit(X, Y, sample_weight=np.where(X[:, 0] > 0, 2.0, 1.0))
    loaded = hemoe_sk.load(hemoe_sk.save(reg, tmp_path / "w.hemoe"))
    assert loaded.scoring == "neg_mean_absolute_error"
    np.testing.assert_array_equal(loaded.predict(X_TEST), reg.predict(X_TEST))
    assert loaded.export_text() == reg.export_text()


def test_a_skorch_net_without_row_weights_is_refused_when_weighted():
    from skorch import NeuralNetRegressor

    from hemoe_sk.nn import MLPEmbedder

    net = NeuralNetRegressor(MLPEmbedder, module__n_features=3, module__n_classes=1,
                             max_epochs=1, train_split=None)
    reg = HierarchicalEmbeddingMoERegressor(net, max_depth=0)
    reg.fit(X, Y)  # unweighted: fine
    with pytest.raises(TypeError, match="per-row weights"):
        reg.fit(X, Y, sample_weight=np.where(X[:, 0] > 0, 2.0, 1.0))


def test_weighted_pair_expert_test_counts_weights():
    """The cluster-pair expert's held-out test reads weighted real-valued
    outcomes: its 80 held-out rows weigh 1 or 2."""
    sw = np.where(X[:, 0] > 0, 2.0, 1.0)
    reg = tree(pair_expert=True, pair_margin=0.9, split_test="none",
               n_clusters_grid=(3,), max_epochs=10, expert_max_epochs=5)
    reg.fit(X, Y, sample_weight=sw)
    decision = reg.tree_.nodes[0].search["pair"]["decision"]
    assert 80 < decision.n < 160 and decision.wins + decision.losses <= decision.n
    assert reg.score(X_TEST, Y_TEST) > 0.5
