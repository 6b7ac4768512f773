"""Cluster-pair experts (``pair_expert=True``): the pair rule, the router
that adds the pair's route, and the classifier that keeps the pair expert
only where held-out rows support it."""

import numpy as np
import pytest
import torch
from _helpers import CLASSIC_NET
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

import hemoe_sk
from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.cluster.torch_routing import router_scores
from hemoe_sk.nn.inference import embed
from hemoe_sk.node import PairRouter, Router, most_confused_pair

P = np.array(
    [
        [0.45, 0.40, 0.15],  # ambiguous between 0 and 1
        [0.10, 0.42, 0.48],  # ambiguous between 1 and 2
        [0.38, 0.44, 0.18],  # ambiguous between 0 and 1
        [0.90, 0.05, 0.05],  # clear
    ]
)


class _Fixed:
    """A stand-in router returning fixed probabilities."""

    n_clusters = 3

    def predict_proba(self, E):
        return P[np.asarray(E, dtype=int).ravel()]

    def predict(self, E):
        return self.predict_proba(E).argmax(axis=1)


def test_most_confused_pair_counts_close_top_two():
    assert most_confused_pair(P, 0.1) == ((0, 1), 2)
    assert most_confused_pair(P, 0.01) == (None, 0)
    assert most_confused_pair(P[:, :1], 0.5) == (None, 0)


def test_pair_router_moves_ambiguous_rows_to_the_last_route():
    router = PairRouter(_Fixed(), (0, 1), 0.1)
    E = np.arange(4).reshape(-1, 1)
    assert router.n_clusters == 4
    np.testing.assert_array_equal(router.predict(E), [3, 2, 3, 0])
    proba = router.predict_proba(E)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[0], [0, 0, 0.15, 0.85])
    np.testing.assert_allclose(proba[1], np.r_[P[1], 0])  # other pair: untouched
    np.testing.assert_allclose(proba[3], np.r_[P[3], 0])


#: A tree whose root split (K=3) and pair expert are forced (split_test="none").
FORCED = dict(**CLASSIC_NET,
    clusterer=KMeans(n_init=2),
    n_clusters_grid=(3,),
    pair_expert=True,
    pair_margin=0.5,
    split_test="none",
    max_depth=1,
    max_epochs=5,
    expert_max_epochs=2,
    random_state=0,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def forced(digits):
    X, y = digits
    return HierarchicalEmbeddingMoEClassifier(**FORCED).fit(X, y)


def test_forced_pair_expert_is_a_leaf_child(forced, digits):
    X, y = digits
    root = forced.tree_.nodes[0]
    assert isinstance(root.router, PairRouter)
    assert isinstance(root.router.router, Router)
    assert len(root.children) == root.router.n_clusters == 4
    pair_node = forced.tree_.nodes[root.children[-1]]
    assert pair_node.is_leaf and pair_node.pair == root.router.pair
    assert not any(forced.tree_.nodes[c].pair for c in root.children[:-1])
    # It trained on the union of the pair's clusters.
    a, b = (forced.tree_.nodes[root.children[i]] for i in root.router.pair)
    assert pair_node.n_samples == a.n_samples + b.n_samples
    assert "pair expert of clusters" in forced.export_text()
    # Hard routing sends the ambiguous rows to it.
    E = embed(root.embedder, X)
    ambiguous = root.router.ambiguous(root.router.router.predict_proba(E))
    assert ambiguous.any()
    np.testing.assert_array_equal(forced.apply(X)[ambiguous], pair_node.node_id)
    for routing in ("soft", "hard"):
        proba = forced.set_params(routing=routing).predict_proba(X)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert forced.score(X, y) > 0.8
    forced.set_params(routing="soft")


def test_pair_router_has_a_differentiable_form(forced, digits):
    X, _ = digits
    root = forced.tree_.nodes[0]
    E = embed(root.embedder, X[:300])
    q = torch.softmax(router_scores(root.router)(torch.as_tensor(E)), dim=1)
    np.testing.assert_allclose(q.detach().numpy(), root.router.predict_proba(E),
                               atol=1e-9)


def test_pair_tree_saves_and_loads(forced, digits, tmp_path):
    X, _ = digits
    hemoe_sk.save(forced, tmp_path / "pair.hemoe")
    loaded = hemoe_sk.load(tmp_path / "pair.hemoe")
    np.testing.assert_array_equal(loaded.predict_proba(X), forced.predict_proba(X))
    assert loaded.tree_.nodes[-1].pair == forced.tree_.nodes[-1].pair


def test_a_forced_pair_expert_is_tested_on_the_root_held_out_rows(forced):
    root = forced.tree_.nodes[0]
    split, pair = root.search["decision"], root.search["pair"]["decision"]
    # split_test="none" keeps the pair expert too, after comparing it with
    # the plain split on the root's held-out rows (20% of 1,797).
    assert pair.test == split.test == "none" and pair.p_value is None
    assert pair.keep and pair.n == split.n == 360
    assert isinstance(root.router, PairRouter)
    assert len(root.children) == 3 + 1
    pair_node = forced.tree_.nodes[root.children[-1]]
    trained, refit = pair_node.training
    assert trained.stage == f"node 0 (depth 0), pair expert {root.router.pair}"
    assert trained.n_rows < refit.n_rows == pair_node.n_samples


def test_a_pair_expert_that_takes_every_row_is_the_unsplit_node_and_loses(
    subpopulations,
):
    """With ``pair_margin=1`` every row is ambiguous between the two
    clusters of a K=2 split, so the pair expert, trained on their union,
    is the unsplit node's expert again: its held-out test mirrors the
    split's, and a split that was kept keeps no pair expert."""
    from conftest import SPLITTING_TREE

    X, y = subpopulations
    params = dict(SPLITTING_TREE, split_test="bootstrap", split_alpha=0.5)
    clf = HierarchicalEmbeddingMoEClassifier(
        **params, pair_expert=True, pair_margin=1.0
    ).fit(X, y)
    root = clf.tree_.nodes[0]
    split, pair = root.search["decision"], root.search["pair"]["decision"]
    assert root.search["pair"]["n_ambiguous"] == len(X) - split.n  # every fit row
    assert split.keep and split.test == pair.test == "bootstrap"
    assert pair.n == split.n  # the same held-out rows
    assert (pair.wins, pair.losses) == (split.losses, split.wins)
    assert pair.gain == pytest.approx(-split.gain) and pair.gain < 0
    assert not pair.keep
    assert type(root.router) is Router and len(root.children) == 2
    assert "vs the plain split on 60 held-out rows" in clf.export_text()


@pytest.mark.parametrize("params", [dict(selection="node"), dict(cv=3)])
def test_pair_expert_needs_held_out_selection(digits, params):
    X, y = digits
    clf = HierarchicalEmbeddingMoEClassifier(pair_expert=True, max_epochs=1, **params)
    with pytest.raises(ValueError, match="pair_expert=True .* selection='held-out'"):
        clf.fit(X[:100], y[:100])
    assert not hasattr(clf, "tree_")
