"""Behaviour of HierarchicalEmbeddingMoEClassifier."""

import copy

import joblib
import numpy as np
import pytest
import torch
from _helpers import CLASSIC_NET
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.nn import ConvEmbedder, MLPEmbedder
from hemoe_sk.nn.inference import predict_proba as net_proba
from hemoe_sk.node import ConstantExpert

SMALL = dict(
    **CLASSIC_NET,
    max_epochs=12,
    expert_max_epochs=3,
    lr=0.005,
    max_depth=1,
    n_clusters_grid=(2, 3),
    min_cluster_size=20,
    clusterer=KMeans(n_init=2),
    random_state=0,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, _, y_train, _ = digits
    return HierarchicalEmbeddingMoEClassifier(**SMALL).fit(X_train, y_train)


def test_accuracy_floor_on_digits(fitted, digits):
    _, X_test, _, y_test = digits
    assert fitted.score(X_test, y_test) >= 0.93
    assert fitted.n_leaves_ == sum(node.is_leaf for node in fitted.tree_.nodes)
    assert fitted.depth_ == max(node.depth for node in fitted.tree_.nodes) <= 1


def test_max_depth_zero_is_the_base_network(digits):
    X_train, X_test, y_train, _ = digits
    clf = HierarchicalEmbeddingMoEClassifier(**{**SMALL, "max_depth": 0})
    clf.fit(X_train, y_train)
    assert clf.n_leaves_ == 1 and clf.depth_ == 0
    assert clf.tree_.nodes[0].search == {}
    assert_allclose(clf.predict_proba(X_test), net_proba(clf.embedder_, X_test))
    assert clf.max_path_epochs_ == SMALL["max_epochs"]


def test_routing_is_chosen_at_prediction_without_refitting(split_tree, subpopulations):
    from conftest import SPLITTING_TREE

    X, y = subpopulations
    clf = copy.deepcopy(split_tree)
    soft = clf.set_params(routing="soft").predict_proba(X)
    hard = clf.set_params(routing="hard").predict_proba(X)
    # A tree fitted for hard routing is the same tree: routing is not used
    # in fit, and switching it after fit gives that tree's predictions.
    fitted_hard = HierarchicalEmbeddingMoEClassifier(**SPLITTING_TREE, routing="hard")
    assert_array_equal(fitted_hard.fit(X, y).predict_proba(X), hard)
    # Soft routing blends the leaves with the router's probabilities.
    assert np.abs(soft - hard).max() > 1e-3


def test_apply_and_decision_path_agree(split_tree, subpopulations):
    X, _ = subpopulations
    leaves = split_tree.apply(X)
    path = split_tree.decision_path(X)
    assert path.shape == (len(X), split_tree.tree_.node_count)
    assert path.format == "csr"
    assert np.all(path[:, 0].toarray() == 1)
    assert np.all(path[np.arange(len(X)), leaves] == 1)
    # The tree has split: samples reach different leaves, never the root.
    assert set(leaves) == set(split_tree.tree_.leaves)
    assert 0 not in set(leaves)
    # every sample visits exactly depth(leaf) + 1 nodes
    depth = np.array([split_tree.tree_.nodes[i].depth for i in leaves])
    assert_array_equal(np.asarray(path.sum(axis=1)).ravel(), depth + 1)



def test_export_text_shows_search(fitted):
    text = fitted.export_text()
    assert "node 0 (depth 0" in text
    assert "K=1:" in text and "K=2:" in text
    assert "train accuracy" in text


def test_the_split_test_decides_and_is_recorded(fitted):
    """The default rule: the best split is kept only if its paired bootstrap
    test against K=1 on the held-out rows passes (gain above 0, p below
    ``split_alpha``); a tie is never a split."""
    root = fitted.tree_.nodes[0]
    scores = root.search["scores"]
    assert set(scores) == {"K=1", "K=2", "K=3"}
    assert "mean_test_score" in root.search["cv_results"]
    decision = root.search["decision"]
    assert decision.test == "bootstrap" and decision.min_gain == 0.0
    # The gain is the held-out accuracy of the best split minus K=1's.
    best = max(s for name, s in scores.items() if name != "K=1")
    assert decision.gain == pytest.approx(best - scores["K=1"])
    assert decision.n == pytest.approx(0.2 * root.n_samples, abs=1)
    kept = decision.gain > 0 and decision.p_value < fitted.split_alpha
    assert decision.keep == kept == (len(root.children) > 1)


@pytest.mark.parametrize("min_gain", [0.0, 0.5])
def test_margin_rule_keeps_a_split_that_gains_more_than_min_gain(digits, min_gain):
    """0.1's rule, still offered: no test, only the margin ``min_gain``."""
    X_train, _, y_train, _ = digits
    clf = HierarchicalEmbeddingMoEClassifier(
        **SMALL, split_test="margin", min_gain=min_gain
    ).fit(X_train[:500], y_train[:500])
    root = clf.tree_.nodes[0]
    scores = root.search["scores"]
    decision = root.search["decision"]
    assert decision.test == "margin" and decision.p_value is None
    assert decision.min_gain == min_gain
    best_name, best = max(
        ((name, s) for name, s in scores.items() if name != "K=1"), key=lambda kv: kv[1]
    )
    assert decision.gain == pytest.approx(best - scores["K=1"])
    assert decision.keep == (decision.gain > min_gain)
    assert len(root.children) == (int(best_name[2:]) if decision.keep else 0)


def test_same_seed_same_model_and_rng_untouched(digits):
    X_train, X_test, y_train, _ = digits
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    threads = torch.get_num_threads()
    a = HierarchicalEmbeddingMoEClassifier(**SMALL).fit(X_train[:400], y_train[:400])
    b = HierarchicalEmbeddingMoEClassifier(**SMALL).fit(X_train[:400], y_train[:400])
    assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    assert a.export_text() == b.export_text()
    assert torch.equal(torch_state, torch.get_rng_state())
    assert_array_equal(np_state, np.random.get_state()[1])
    assert torch.get_num_threads() == threads


def test_joblib_round_trip(split_tree, subpopulations, tmp_path):
    # (pickle itself is scikit-learn's check_estimators_pickle, in test_common)
    X, _ = subpopulations
    joblib.dump(split_tree, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    assert_array_equal(loaded.predict_proba(X), split_tree.predict_proba(X))
    assert [n.training for n in loaded.tree_.nodes] == [
        n.training for n in split_tree.tree_.nodes
    ]


def test_string_labels_pipeline_and_cross_validation():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    tiny = {**SMALL, "max_epochs": 30, "lr": 0.02, "min_cluster_size": 10}
    pipe = make_pipeline(StandardScaler(), HierarchicalEmbeddingMoEClassifier(**tiny))
    scores = cross_val_score(pipe, X, names, cv=3)
    assert scores.mean() >= 0.8
    pipe.fit(X, names)
    assert set(pipe.predict(X)) <= set(names)
    assert list(pipe.classes_) == ["setosa", "versicolor", "virginica"]


def test_grid_search_over_own_parameters():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = HierarchicalEmbeddingMoEClassifier(
        **{**SMALL, "max_epochs": 20, "lr": 0.02, "max_depth": 0}
    )
    search = GridSearchCV(
        clf, {"lr": [0.001, 0.02], "embedder__hidden_dims": [(2,), (8,)]}, cv=2
    )
    search.fit(X, y)
    # Every candidate was fitted with its own parameters (they reach the
    # network), and the refit best estimator has the best candidate's.
    assert len(set(search.cv_results_["mean_test_score"])) == 4
    best = search.best_params_
    assert search.best_estimator_.embedder_.lr == best["lr"]
    width = search.best_estimator_.embedder_.module_.body[0].out_features
    assert (width,) == best["embedder__hidden_dims"]


def test_embedder_module_class_and_skorch_net(digits):
    X_train, X_test, y_train, y_test = digits
    conv = HierarchicalEmbeddingMoEClassifier(
        **{**SMALL, "max_depth": 0, "embedder": ConvEmbedder},
        embedder__image_shape=(1, 8, 8),
    ).fit(X_train, y_train)
    assert conv.score(X_test, y_test) >= 0.9
    net = NeuralNetClassifier(
        MLPEmbedder,
        module__hidden_dims=(32,),
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=8,
        lr=0.01,
        optimizer=torch.optim.Adam,
        train_split=None,
    )
    before = net.get_params()
    clf = HierarchicalEmbeddingMoEClassifier(**{**SMALL, "max_depth": 0, "embedder": net})
    clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.85
    assert not hasattr(net, "module_")  # the user's net was cloned, not fitted
    assert net.get_params().keys() == before.keys()


def test_bad_embedder_params_are_clear(digits):
    X_train, _, y_train, _ = digits
    clf = HierarchicalEmbeddingMoEClassifier(embedder__nonsense=3, **SMALL)
    with pytest.raises(TypeError, match="embedder__"):
        clf.fit(X_train, y_train)
    with pytest.raises(TypeError, match="embedder.*must be"):
        HierarchicalEmbeddingMoEClassifier(embedder=MLPEmbedder(4, 2)).fit(
            X_train, y_train
        )


@pytest.mark.parametrize(
    "params",
    [
        {"expert": "head", "expert_max_epochs": 20},
        {"expert": LogisticRegression(max_iter=300)},
        {"overlap": 0.3, "routing": "soft"},
        {"reducer": PCA(n_components=5)},
        {"cluster_param_grid": {"n_clusters": [2, 3]}},
    ],
    ids=["head", "sklearn-expert", "overlap-soft", "reducer", "param-grid"],
)
def test_expert_and_router_options(params, digits):
    X_train, X_test, y_train, y_test = digits
    clf = HierarchicalEmbeddingMoEClassifier(**{**SMALL, **params})
    clf.fit(X_train[:600], y_train[:600])
    assert clf.score(X_test, y_test) >= 0.85
    assert_allclose(clf.predict_proba(X_test[:50]).sum(axis=1), 1.0)


def test_split_is_forced_and_single_class_leaf_predicts_it():
    # Four well separated blobs, the first a class of its own: a forced K=4
    # split (split_test="none") gives it a leaf that holds one class, and a
    # leaf that never saw the other classes still gives their columns.
    rng = np.random.RandomState(0)
    centers = np.array([[0, 0], [10, 10], [0, 10], [10, 0]], dtype=float)
    X = np.vstack([c + rng.randn(60, 2) * 0.3 for c in centers])
    y = np.repeat([0, 1, 0, 1], 60)
    y[:60] = 2
    clf = HierarchicalEmbeddingMoEClassifier(
        **{**SMALL, "max_epochs": 30, "lr": 0.01, "min_cluster_size": 5,
           "n_clusters_grid": (4,), "split_test": "none", "routing": "hard"}
    ).fit(X, y)
    assert len(clf.tree_.nodes[0].children) == 4
    leaves = [clf.tree_.nodes[i] for i in clf.tree_.leaves]
    single = [node for node in leaves if np.count_nonzero(node.class_counts) == 1]
    assert single, clf.export_text()
    reached = clf.apply(X)
    for node in leaves:
        assert isinstance(node.classifier, ConstantExpert) == (node in single)
    for node in single:
        rows = reached == node.node_id
        assert rows.any()
        label = np.flatnonzero(node.class_counts)[0]
        assert_array_equal(clf.predict_proba(X[rows]), np.eye(3)[np.full(rows.sum(), label)])
    assert clf.score(X, y) >= 0.95
