"""Split selection: the paired decision rule and held-out selection."""

import numpy as np
import pytest
import torch
from _helpers import CLASSIC_NET
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import binomtest
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.nn import MLPEmbedder
from hemoe_sk.node import decide_split
from hemoe_sk.tree import TrainingRecord


def _outcomes(n, both, only_split, only_unsplit):
    """Paired outcomes: ``both`` rows right for both, then rows only the
    split got right, rows only the unsplit node got right, the rest wrong."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:both] = b[:both] = True
    a[both:both + only_split] = True
    b[both + only_split:both + only_split + only_unsplit] = True
    return a, b


# -- the decision rule on hand-made outcomes -----------------------------------


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar", "margin"])
def test_identical_outcomes_are_never_a_split(test):
    a, _ = _outcomes(200, 150, 0, 0)
    d = decide_split(a, a, test=test, min_gain=0.0)
    assert not d.keep and d.gain == 0.0 and d.wins == d.losses == 0


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar", "margin"])
def test_a_clear_win_is_kept_and_a_loss_never(test):
    a, b = _outcomes(200, 150, 20, 1)
    win = decide_split(a, b, test=test)
    assert win.keep and win.gain == pytest.approx(19 / 200)
    assert (win.wins, win.losses, win.n) == (20, 1, 200)
    loss = decide_split(b, a, test=test, min_gain=0.0)
    assert not loss.keep and loss.gain < 0


def test_a_gain_of_one_row_is_noise_for_the_tests_not_for_margin_zero():
    a, b = _outcomes(1000, 900, 2, 1)
    assert decide_split(a, b, test="margin", min_gain=0.0).keep
    assert not decide_split(a, b, test="margin").keep  # one standard error
    assert not decide_split(a, b, test="bootstrap").keep
    assert not decide_split(a, b, test="mcnemar").keep


def test_mcnemar_is_the_exact_one_sided_binomial_test():
    a, b = _outcomes(300, 200, 14, 5)
    d = decide_split(a, b, test="mcnemar")
    expected = binomtest(14, 19, 0.5, alternative="greater").pvalue
    assert d.p_value == pytest.approx(expected)
    assert d.keep == (expected < 0.05)


def test_bootstrap_agrees_with_the_exact_test_and_is_seeded():
    a, b = _outcomes(500, 300, 30, 12)
    d1 = decide_split(a, b, test="bootstrap", random_state=1)
    d2 = decide_split(a, b, test="bootstrap", random_state=1)
    assert d1.p_value == d2.p_value
    exact = binomtest(30, 42, 0.5, alternative="greater").pvalue
    assert d1.p_value < 0.05 and exact < 0.05
    # a borderline case: both tests see the same weak evidence
    a, b = _outcomes(500, 300, 12, 8)
    assert decide_split(a, b, test="bootstrap").p_value > 0.1


def test_alpha_and_min_gain_are_respected():
    a, b = _outcomes(200, 150, 12, 3)
    assert decide_split(a, b, test="mcnemar", alpha=0.05).keep
    assert not decide_split(a, b, test="mcnemar", alpha=0.001).keep
    assert not decide_split(a, b, test="mcnemar", min_gain=0.1).keep  # gain 0.045
    auto = decide_split(a, b, test="margin")
    acc = b.mean()
    assert auto.min_gain == pytest.approx(np.sqrt(acc * (1 - acc) / 200))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="paired outcomes"):
        decide_split(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="test must be one of"):
        decide_split(np.ones(3, bool), np.ones(3, bool), test="t-test")
    assert not decide_split([], []).keep


def test_search_node_defaults_to_the_estimators_split_test(subpopulations):
    from sklearn.linear_model import LogisticRegression

    from hemoe_sk import HierarchicalEmbeddingMoERegressor
    from hemoe_sk.node import NodeContext, search_node

    X, y = subpopulations
    rows = np.arange(len(X))
    context = NodeContext(X=X, y=y, rows=rows, E=X, net=None, n_classes=2,
                          expert=LogisticRegression())
    result = search_node(
        context, n_clusters_grid=(2,), clusterer=KMeans(n_init=2),
        min_cluster_size=20, validation_size=0.2, cv=None, seed=0,
    )
    default = HierarchicalEmbeddingMoEClassifier().split_test
    assert default == HierarchicalEmbeddingMoERegressor().split_test
    assert result.decision.test == default
    assert result.decision.p_value is not None  # a test ran, not 0.1's margin


# -- held-out selection in the classifier ------------------------------------------


@pytest.fixture(scope="module")
def subclasses():
    X, y = make_classification(
        n_samples=900, n_features=10, n_informative=4, n_redundant=0,
        n_classes=3, n_clusters_per_class=3, class_sep=2.5, random_state=0,
    )
    return X.astype(np.float32), y


TINY = dict(**CLASSIC_NET,
    max_epochs=6, expert_max_epochs=2, lr=0.01, max_depth=1, n_clusters_grid=(2, 3),
    min_cluster_size=40, clusterer=KMeans(n_init=2), random_state=0,
)

#: ``TINY`` with the root's split forced: ``split_test="none"`` keeps the best
#: split candidate whatever it scores, so these tests always see a tree that
#: routes.
FORCED = dict(TINY, split_test="none")


class RowLog(Callback):
    """Logs, in this process, the rows of ``X`` on which every training of a
    net starts. The tree's fine-tuned experts are deep copies of its
    embedder: the log is the class's, so the copies' callbacks write to it
    too."""

    calls = []

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        RowLog.calls.append(np.asarray(X.rows) if hasattr(X, "rows") else None)


@pytest.fixture
def row_log():
    """An embedder net (a plain skorch net, as a user passes one) whose
    trainings log their rows, and the log."""
    RowLog.calls = []
    net = NeuralNetClassifier(
        MLPEmbedder,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=6,
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[("rows", RowLog())],
    )
    yield net, RowLog.calls
    RowLog.calls = []


def _records(clf, node_id):
    return clf.tree_.nodes[node_id].training


def test_no_network_trains_on_the_rows_that_choose_the_split(subclasses, row_log):
    X, y = subclasses
    embedder, calls = row_log
    clf = HierarchicalEmbeddingMoEClassifier(**{**FORCED, "embedder": embedder}).fit(X, y)
    root = clf.tree_.nodes[0]
    leaves = [clf.tree_.nodes[i] for i in clf.tree_.leaves]
    assert len(leaves) > 1
    # The root network trained on the fit part of the tree-wide split ...
    (record,) = root.training
    assert record.stage == "root network (fit part)"
    held_out = np.setdiff1d(np.arange(len(X)), calls[0])
    assert len(calls[0]) == record.n_rows == len(X) - len(held_out)
    assert len(held_out) == pytest.approx(0.2 * len(X), abs=2)
    # ... the split was chosen on the other rows ...
    assert root.search["decision"].n == len(held_out)
    assert f"on {len(held_out)} held-out rows" in clf.export_text()
    # ... and the search's experts (every candidate's, fine-tuned copies of
    # the root network) never saw them.
    n_search = sum(len(leaf.training) == 2 for leaf in leaves)
    search_calls = calls[1:-len(leaves)]
    assert len(search_calls) >= n_search == len(leaves)
    assert all(np.intersect1d(rows, held_out).size == 0 for rows in search_calls)
    # The chosen candidate's experts are the leaves' (no final expert is
    # trained again); each leaf is then refit once on all of its rows.
    reached = clf.apply(X)
    fit_rows = 0
    for leaf in leaves:
        search, refit = leaf.training
        assert "K=" in search.stage and "search, expert" in search.stage
        assert search.epochs == refit.epochs == FORCED["expert_max_epochs"]
        assert refit.stage.endswith("refit on all rows")
        fit_rows += search.n_rows
        assert refit.n_rows == leaf.n_samples > search.n_rows
    # The leaves' experts together trained on exactly the fit part; the
    # refits cover every row, the held-out ones included.
    assert fit_rows == len(X) - len(held_out)
    refit_calls = calls[-len(leaves):]
    assert sorted(len(r) for r in refit_calls) == sorted(leaf.n_samples for leaf in leaves)
    assert_array_equal(np.sort(np.concatenate(refit_calls)), np.arange(len(X)))
    for refit_rows in refit_calls:  # each refit trained on one leaf's rows
        assert np.unique(reached[refit_rows]).size == 1


def test_node_selection_trains_the_root_on_all_rows(subclasses):
    X, y = subclasses
    clf = HierarchicalEmbeddingMoEClassifier(**FORCED, selection="node").fit(X, y)
    root = clf.tree_.nodes[0]
    assert root.training == [TrainingRecord("root network", len(X), TINY["max_epochs"])]
    # 0.1's rule trains the chosen K's experts again, on all of their rows,
    # and refits nothing.
    assert len(root.children) > 1
    for c, child in enumerate(root.children):
        (record,) = _records(clf, child)
        assert record == TrainingRecord(
            f"node 0 (depth 0), final expert {c}",
            clf.tree_.nodes[child].n_samples,
            TINY["expert_max_epochs"],
        )


def test_an_unsplit_tree_is_exactly_the_base_network(subclasses):
    X, y = subclasses
    # p-values are at least 1 / 4001: alpha below that never splits
    tree = HierarchicalEmbeddingMoEClassifier(**TINY, split_alpha=1e-4).fit(X, y)
    base = HierarchicalEmbeddingMoEClassifier(**{**TINY, "max_depth": 0}).fit(X, y)
    assert tree.n_leaves_ == 1
    assert tree.tree_.nodes[0].search["decision"] is not None
    assert_allclose(tree.predict_proba(X), base.predict_proba(X), rtol=0, atol=1e-6)
    # the unsplit root was trained again on all rows, like the base network
    assert [r.stage for r in tree.tree_.nodes[0].training] == [
        "root network (fit part)", "root network"
    ]
    assert tree.tree_.nodes[0].training[-1] == base.tree_.nodes[0].training[0]


def test_without_refit_the_leaves_keep_their_fit_part_networks(subclasses):
    X, y = subclasses
    clf = HierarchicalEmbeddingMoEClassifier(**FORCED, refit=False).fit(X, y)
    leaves = [clf.tree_.nodes[i] for i in clf.tree_.leaves]
    assert len(leaves) > 1
    for leaf in leaves:
        (record,) = leaf.training
        assert "search, expert" in record.stage and record.n_rows < leaf.n_samples


def test_selection_is_deterministic(subclasses):
    X, y = subclasses
    a = HierarchicalEmbeddingMoEClassifier(**FORCED).fit(X, y)
    b = HierarchicalEmbeddingMoEClassifier(**FORCED).fit(X, y)
    assert a.n_leaves_ > 1
    assert_array_equal(a.apply(X), b.apply(X))
    assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=0)
    assert [n.training for n in a.tree_.nodes] == [n.training for n in b.tree_.nodes]


# -- experts that see more than their cluster, cheaper search, refinement -----


def test_outside_share_adds_a_seeded_random_share_of_the_other_clusters():
    from hemoe_sk.node import overlap_positions

    labels = np.repeat([0, 1, 2], [50, 30, 20])
    own = np.flatnonzero(labels == 1)
    pos = overlap_positions(labels, None, 1, 0.0, outside_share=0.25, seed=3)
    assert np.isin(own, pos).all()
    assert len(pos) == 30 + round(0.25 * 70)
    assert_array_equal(pos, overlap_positions(labels, None, 1, 0.0, 0.25, seed=3))
    assert not np.array_equal(pos, overlap_positions(labels, None, 1, 0.0, 0.25, seed=4))
    # overlap takes the closest points first, the share is drawn from the rest
    proba = np.zeros((100, 3))
    proba[:, 1] = np.linspace(0, 1, 100)
    both = overlap_positions(labels, proba, 1, 0.5, outside_share=0.1, seed=0)
    assert len(both) == len(np.unique(both)) == 30 + 15 + round(0.1 * 55)
    assert np.isin([99, 98, 97], both).all()  # the 15 closest others are in


def test_head_search_scores_with_heads_and_trains_only_the_chosen_experts(
    subclasses, row_log
):
    X, y = subclasses
    embedder, calls = row_log
    clf = HierarchicalEmbeddingMoEClassifier(
        **{**FORCED, "embedder": embedder}, search_expert="head"
    ).fit(X, y)
    root = clf.tree_.nodes[0]
    leaves = clf.tree_.leaves
    assert len(root.children) == len(leaves) > 1
    assert set(root.search["scores"]) == {"K=1", "K=2", "K=3"}
    # The candidates were scored with linear heads on the root's embeddings:
    # no copy of the root network trained in the search. Only the chosen
    # K's experts were fine-tuned (on the fit rows), then refit.
    assert len(calls) == 1 + 2 * len(leaves)
    for c, leaf in enumerate(leaves):
        final, refit = _records(clf, leaf)
        assert final.stage == f"node 0 (depth 0), final expert {c}"
        assert refit.stage.endswith("refit on all rows")
        assert len(calls[1 + c]) == final.n_rows < refit.n_rows


@pytest.fixture(scope="module")
def split_tree(subclasses):
    X, y = subclasses
    clf = HierarchicalEmbeddingMoEClassifier(**FORCED).fit(X, y)
    assert clf.n_leaves_ > 1
    return FORCED, clf


def test_torch_routers_equal_the_routers_soft_assignment(split_tree, subclasses):
    from hemoe_sk.nn import embed
    from hemoe_sk.refine import torch_router

    X, _ = subclasses
    _, clf = split_tree
    root = clf.tree_.nodes[0]
    E = embed(root.embedder, X[:50])
    fn = torch_router(root.router)
    assert fn is not None
    import torch

    q = fn(torch.as_tensor(E)).detach().numpy()
    assert_allclose(q, root.router.predict_proba(E), rtol=1e-4, atol=1e-6)


def test_refinement_trains_the_whole_tree(split_tree, subclasses):
    X, y = subclasses
    params, plain = split_tree
    refined = HierarchicalEmbeddingMoEClassifier(**params, refine_epochs=2).fit(X, y)
    assert len(refined.refine_loss_) == 2 and np.isfinite(refined.refine_loss_).all()
    assert plain.refine_loss_ == []
    assert refined.max_path_epochs_ == plain.max_path_epochs_ + 2
    assert refined.tree_.node_count == plain.tree_.node_count
    assert refined.n_leaves_ == plain.n_leaves_  # the same tree ...
    for node in refined.tree_.nodes:  # ... whose every network trained again
        assert node.training[-1] == TrainingRecord("joint refinement", len(X), 2)
    assert all(
        r.stage != "joint refinement" for n in plain.tree_.nodes for r in n.training
    )
    p1, p2 = plain.predict_proba(X), refined.predict_proba(X)
    assert np.abs(p1 - p2).max() > 1e-3  # ... with other weights
    assert_allclose(p2.sum(axis=1), 1.0)
    again = HierarchicalEmbeddingMoEClassifier(**params, refine_epochs=2).fit(X, y)
    assert_allclose(again.predict_proba(X), p2, rtol=0, atol=0)


@pytest.mark.parametrize(
    "params", [{"expert": "residual"}, {"expert": "lora"}, {"expert_kl": 1.0}]
)
def test_experts_that_keep_their_parent(split_tree, subclasses, params):
    import pickle

    from hemoe_sk.nn.experts import ExpertNeuralNetClassifier

    X, y = subclasses
    forced, plain = split_tree
    clf = HierarchicalEmbeddingMoEClassifier(**forced, **params).fit(X, y)
    assert clf.n_leaves_ > 1
    leaves = [clf.tree_.nodes[i].classifier for i in clf.tree_.leaves]
    assert all(isinstance(e.net, ExpertNeuralNetClassifier) for e in leaves)
    proba = clf.predict_proba(X)
    assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, y) > 0.8
    again = pickle.loads(pickle.dumps(clf))
    assert_allclose(again.predict_proba(X), proba, rtol=0, atol=0)


def test_lora_leaves_are_small(split_tree, subclasses):
    import pickle

    X, y = subclasses
    params, plain = split_tree
    # the same number of leaves as the plain tree (its K, the only one tried)
    lora = HierarchicalEmbeddingMoEClassifier(
        **{**params, "n_clusters_grid": (plain.n_leaves_,)}, expert="lora"
    ).fit(X, y)
    assert lora.n_leaves_ == plain.n_leaves_ > 1
    # the frozen parents' weights are stored once, the adapters are small
    assert len(pickle.dumps(lora)) < len(pickle.dumps(plain))


def test_expert_nets_round_trip_in_the_safe_format(split_tree, subclasses, tmp_path):
    """Residual experts (0.3 refused to save them) load with identical
    probabilities, their frozen parent shared again."""
    import hemoe_sk

    X, y = subclasses
    params, _ = split_tree
    # split_test="none": the tree must hold expert nets for the check to mean
    # anything, whether or not a residual split wins on these rows.
    clf = HierarchicalEmbeddingMoEClassifier(
        **{**params, "expert": "residual", "split_test": "none"}
    ).fit(X, y)
    assert clf.n_leaves_ > 1
    loaded = hemoe_sk.load(hemoe_sk.save(clf, tmp_path / "m.hemoe"))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    experts = [
        n.classifier.net
        for n in loaded.tree_.nodes
        if hasattr(getattr(n.classifier, "net", None), "parent_net_")
    ]
    assert experts
    assert all(e.module_.parent is e.parent_net_.module_ for e in experts)


def test_a_search_with_ineligible_candidates_saves_and_loads(split_tree, subclasses,
                                                              tmp_path):
    """An ineligible K scores NaN (numpy's float64): the safe format keeps it."""
    import hemoe_sk

    X, _ = subclasses
    _, clf = split_tree
    clf = __import__("copy").deepcopy(clf)
    clf.tree_.nodes[0].search["scores"]["K=9"] = np.float64("nan")
    hemoe_sk.save(clf, tmp_path / "m.hemoe")
    loaded = hemoe_sk.load(tmp_path / "m.hemoe")
    assert np.isnan(loaded.tree_.nodes[0].search["scores"]["K=9"])
    assert loaded.tree_.nodes[0].search["decision"] == clf.tree_.nodes[0].search["decision"]
    assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=0, atol=0)
