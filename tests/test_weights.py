"""Sample and class weights on the three classifiers.

scikit-learn's ``check_sample_weight_equivalence_on_dense_data`` cannot pass
where a fit draws something per row (random splits, dropout masks, gate
noise; see ``EXPECTED_FAILED_CHECKS`` in tests/test_common.py). The tests here
prove the equivalence where it holds: one full batch, no dropout, no split.
"""

import io
import pickle

import numpy as np
import pytest
import torch
from _helpers import weighted_vs_repeated
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris, make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.class_weight import compute_sample_weight
from skorch import NeuralNetClassifier
from torch import nn

from hemoe_sk import (
    FineTunedEnsembleClassifier,
    HierarchicalEmbeddingMoEClassifier,
    MixtureOfExpertsClassifier,
)
from hemoe_sk.nn import MLPEmbedder
from hemoe_sk.nn.build import make_classifier_net
from hemoe_sk.nn.training import RowSubset, train_net
from hemoe_sk.node import decide_split
from hemoe_sk.persistence import load, save

CLASSIFIERS = (
    HierarchicalEmbeddingMoEClassifier,
    MixtureOfExpertsClassifier,
    FineTunedEnsembleClassifier,
)

#: Each classifier in a configuration where weighting is exactly repeating:
#: one batch holds the whole set, nothing is drawn per row (no dropout, no
#: gate noise, no split of the rows).
FULL_BATCH = {
    HierarchicalEmbeddingMoEClassifier: dict(
        max_depth=0, max_epochs=15, lr=0.01, batch_size=4096, early_stopping=0.0,
        embedder__hidden_dims=(16,), embedder__dropout=0.0, random_state=0,
    ),
    MixtureOfExpertsClassifier: dict(
        n_experts=2, expert_hidden=(8,), gate_hidden=(), max_epochs=15,
        batch_size=4096, early_stopping=0.0, random_state=0,
    ),
    FineTunedEnsembleClassifier: dict(
        n_estimators=2, max_epochs=10, finetune_epochs=3, lr=0.01, batch_size=4096,
        early_stopping=0.0,
        embedder__hidden_dims=(16,), embedder__dropout=0.0, random_state=0,
    ),
}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return X, y


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
def test_integer_weights_equal_repeated_rows(cls, iris):
    X, y = iris
    sw = np.random.RandomState(0).randint(0, 4, len(y))  # zeros included
    weighted = cls(**FULL_BATCH[cls]).fit(X, y, sample_weight=sw)
    repeated = cls(**FULL_BATCH[cls]).fit(X.repeat(sw, 0), y.repeat(sw))
    unweighted = cls(**FULL_BATCH[cls]).fit(X, y)
    p_w, p_r = weighted.predict_proba(X), repeated.predict_proba(X)
    np.testing.assert_allclose(p_w, p_r, atol=1e-5)
    # ... and the weights did change the fit.
    assert np.abs(unweighted.predict_proba(X) - p_w).max() > 1e-3


def test_weight_equivalence_on_the_sklearn_check_data():
    """scikit-learn's check_sample_weight_equivalence_on_dense_data on the
    soft-gated flat MoE of tests/test_common.py, at a float32 tolerance.

    The check asks rtol=1e-7; the two fits differed by 1.8e-7 relative on
    one machine and passed on another (float32 sums in another order).
    rtol=1e-5 is 55x that difference, and the unweighted fit differs from
    both by 0.17 relative, so the comparison still tells weighting from
    ignoring the weights.
    """
    est = MixtureOfExpertsClassifier(
        max_epochs=10, expert_hidden=(16,), gate_hidden=(8,), random_state=0
    )
    p_w, p_r = weighted_vs_repeated(est, "predict_proba")
    np.testing.assert_allclose(p_w, p_r, rtol=1e-5)


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
def test_unit_weights_are_the_unweighted_fit_exactly(cls, iris):
    X, y = iris
    plain = cls(**FULL_BATCH[cls]).fit(X, y).predict_proba(X)
    ones = cls(**FULL_BATCH[cls]).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(ones.predict_proba(X), plain)


def test_zero_weight_equals_removed_rows_in_a_split_tree(subpopulations):
    """Rows of weight 0 are dropped before anything is drawn, so even a
    split tree (held-out split, K search, KMeans routers) is the same."""
    X, y = subpopulations
    keep = np.random.RandomState(1).rand(len(y)) > 0.25
    params = dict(
        clusterer=KMeans(n_init=2), n_clusters_grid=(2,), split_test="none",
        min_cluster_size=20, max_depth=1, max_epochs=3, lr=0.01,
        embedder__hidden_dims=(16,), random_state=0,
    )
    weighted = HierarchicalEmbeddingMoEClassifier(**params).fit(
        X, y, sample_weight=keep.astype(float)
    )
    removed = HierarchicalEmbeddingMoEClassifier(**params).fit(X[keep], y[keep])
    assert weighted.n_leaves_ == removed.n_leaves_ == 2
    np.testing.assert_array_equal(weighted.predict_proba(X), removed.predict_proba(X))


def test_weighted_split_tree_uses_the_weights(subpopulations):
    """Weights reach the K search's scores, the split test, the router and
    the refinement: a weighted tree differs from the unweighted one, and
    weights that are a constant multiple of 1 do not change the partition."""
    X, y = subpopulations
    seen = []

    class RecordingKMeans(KMeans):
        def fit(self, X, y=None, sample_weight=None):
            seen.append(None if sample_weight is None else np.asarray(sample_weight))
            return super().fit(X, y, sample_weight=sample_weight)

    sw = np.where(y == 1, 3.0, 1.0)
    params = dict(
        clusterer=RecordingKMeans(n_init=2), n_clusters_grid=(2,),
        split_test="bootstrap", min_gain=0.0, min_cluster_size=20, max_depth=1,
        max_epochs=3, lr=0.01, embedder__hidden_dims=(16,), refine_epochs=1,
        random_state=0,
    )
    clf = HierarchicalEmbeddingMoEClassifier(**params).fit(X, y, sample_weight=sw)
    assert seen and all(w is not None and set(np.unique(w)) <= {1.0, 3.0} for w in seen)
    decision = clf.tree_.nodes[0].search["decision"]
    # The split test counted weighted rows: n is a sum of weights.
    held_out = decision.n
    assert held_out > 0.2 * len(y) * 1.5
    assert len(clf.refine_loss_) == (1 if clf.n_leaves_ > 1 else 0)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    seen.clear()
    plain = HierarchicalEmbeddingMoEClassifier(**params).fit(X, y)
    assert seen and all(w is None for w in seen)
    assert not np.allclose(plain.predict_proba(X), proba)


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
def test_balanced_class_weight_equals_balanced_sample_weight(cls, iris):
    X, y = iris
    idx = np.r_[0:50, 50:70, 100:110]  # 50 / 20 / 10
    X, y = X[idx], y[idx]
    by_class = cls(**FULL_BATCH[cls], class_weight="balanced").fit(X, y)
    by_row = cls(**FULL_BATCH[cls]).fit(
        X, y, sample_weight=compute_sample_weight("balanced", y)
    )
    np.testing.assert_array_equal(by_class.predict_proba(X), by_row.predict_proba(X))
    # class_weight multiplies sample_weight.
    sw = np.random.RandomState(0).randint(1, 3, len(y)).astype(float)
    both = cls(**FULL_BATCH[cls], class_weight={0: 2.0}).fit(X, y, sample_weight=sw)
    product = cls(**FULL_BATCH[cls]).fit(X, y, sample_weight=sw * np.where(y == 0, 2, 1))
    np.testing.assert_array_equal(both.predict_proba(X), product.predict_proba(X))


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
def test_extreme_class_weight_predicts_the_heavy_class(cls):
    """scikit-learn's check_class_weight_classifiers, with a budget that
    trains (its own configuration in test_common is too small to move)."""
    for n_centers in (2, 3):
        X, y = make_blobs(centers=n_centers, random_state=0, cluster_std=20)
        X_train, X_test, y_train, _ = train_test_split(
            X, y, test_size=0.5, random_state=0
        )
        class_weight = {0: 1000, 1: 0.0001, 2: 0.0001}
        class_weight = {k: v for k, v in class_weight.items() if k < n_centers}
        params = dict(max_epochs=30, lr=0.01, random_state=0)
        if cls is HierarchicalEmbeddingMoEClassifier:
            params.update(clusterer=KMeans(n_init=1), max_depth=1, min_cluster_size=5)
        if cls is FineTunedEnsembleClassifier:
            params.update(n_estimators=2, finetune_epochs=2)
        weighted = cls(**params, class_weight=class_weight).fit(X_train, y_train)
        plain = cls(**params).fit(X_train, y_train)
        assert np.mean(weighted.predict(X_test) == 0) > 0.87
        assert np.mean(plain.predict(X_test) == 0) < 0.87


def test_balanced_class_weight_raises_minority_recall(subpopulations):
    X, y = subpopulations
    rng = np.random.RandomState(0)
    keep = (y == 0) | (rng.rand(len(y)) < 0.15)  # class 1 is ~13% of the rows
    X, y = X[keep], y[keep]
    params = dict(n_experts=2, expert_hidden=(16,), max_epochs=20, lr=0.01,
                  random_state=0)
    plain = MixtureOfExpertsClassifier(**params).fit(X, y)
    balanced = MixtureOfExpertsClassifier(**params, class_weight="balanced").fit(X, y)
    recall = [np.mean(m.predict(X[y == 1]) == 1) for m in (plain, balanced)]
    assert recall[1] > recall[0] + 0.1, recall


# -- bad input ------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (np.r_[-1.0, np.ones(149)], "Negative values"),
        (np.r_[np.nan, np.ones(149)], "NaN"),
        (np.r_[np.inf, np.ones(149)], "infinity"),
        (np.ones(10), "shape"),
        (np.ones((150, 2)), "1D"),
        (np.zeros(150), "at least one non-zero"),
        (np.r_[np.ones(50), np.zeros(100)], "at least 2 classes with a positive weight"),
    ],
    ids=["negative", "nan", "inf", "length", "2d", "all-zero", "one-class-left"],
)
def test_bad_sample_weight_is_a_clear_value_error(cls, iris, sample_weight, message):
    X, y = iris
    with pytest.raises(ValueError, match=message):
        cls(max_epochs=1).fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=lambda c: c.__name__)
def test_bad_class_weight_is_a_clear_error(cls, iris):
    X, y = iris
    with pytest.raises(ValueError, match=r"keys \[7, 'a'\] that are not labels"):
        cls(max_epochs=1, class_weight={0: 2.0, 7: 1.0, "a": 3.0}).fit(X, y)
    with pytest.raises(ValueError, match=r"class_weight\[1\] must be a finite number"):
        cls(max_epochs=1, class_weight={1: -1.0}).fit(X, y)
    with pytest.raises(ValueError, match="all zero"):
        cls(max_epochs=1, class_weight={0: 0, 1: 0, 2: 0}).fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):  # the parameter constraint
        cls(max_epochs=1, class_weight="uniform").fit(X, y)


def test_string_labels_and_class_weight(iris):
    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = MixtureOfExpertsClassifier(
        **FULL_BATCH[MixtureOfExpertsClassifier], class_weight={"setosa": 0.5}
    ).fit(X, labels)
    ref = MixtureOfExpertsClassifier(**FULL_BATCH[MixtureOfExpertsClassifier]).fit(
        X, labels, sample_weight=np.where(y == 0, 0.5, 1.0)
    )
    np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))


def test_a_net_without_row_weights_is_refused(iris):
    X, y = iris
    net = NeuralNetClassifier(
        MLPEmbedder, module__n_features=4, module__n_classes=3,
        criterion=nn.CrossEntropyLoss, max_epochs=1, train_split=None,
    )
    clf = HierarchicalEmbeddingMoEClassifier(net, max_depth=0)
    with pytest.raises(TypeError, match="per-row weights"):
        clf.fit(X, y, sample_weight=np.arange(150) % 3)
    clf.fit(X, y)  # unweighted, the same net trains as before


def test_sklearn_expert_needs_sample_weight(subpopulations):
    X, y = subpopulations
    params = dict(
        clusterer=KMeans(n_init=1), n_clusters_grid=(2,), split_test="none",
        min_cluster_size=20, max_depth=1, max_epochs=2, random_state=0,
    )
    sw = np.where(y == 1, 2.0, 1.0)
    with pytest.raises(ValueError, match="KNeighborsClassifier does not take sample_weight"):
        HierarchicalEmbeddingMoEClassifier(**params, expert=KNeighborsClassifier()).fit(
            X, y, sample_weight=sw
        )
    clf = HierarchicalEmbeddingMoEClassifier(**params, expert=LogisticRegression())
    assert clf.fit(X, y, sample_weight=sw).n_leaves_ == 2


# -- the pieces -------------------------------------------------------------


def test_weighted_loss_is_the_weighted_mean_of_row_losses():
    net = make_classifier_net(MLPEmbedder, n_features=3, n_classes=2).initialize()
    logits = torch.randn(5, 2)
    y = torch.tensor([0, 1, 1, 0, 1])
    w = torch.tensor([1.0, 0.0, 2.0, 3.0, 0.5])
    rows = nn.functional.cross_entropy(logits, y, reduction="none")
    loss = net.get_loss(logits, (y, w), training=False)
    torch.testing.assert_close(loss, (rows * w).sum() / w.sum())
    # the criterion's own reduction is put back
    assert net.criterion_.reduction == "mean"
    torch.testing.assert_close(net.get_loss(logits, y), rows.mean())


def test_row_subset_weights_train_like_repeated_rows():
    rng = np.random.RandomState(0)
    X = rng.randn(12, 3).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    w = rng.randint(1, 4, 12)

    def fit(data, target):
        net = make_classifier_net(MLPEmbedder, n_features=3, n_classes=2,
                                  module_params={"hidden_dims": (8,), "dropout": 0.0},
                                  max_epochs=5, lr=0.05, batch_size=100)
        return train_net(net, data, target, seed=0, stage="test")

    a = fit(RowSubset(X, y, np.arange(12), weight=w), None)
    b = fit(RowSubset(X.repeat(w, 0), y.repeat(w), np.arange(w.sum())), None)
    for p, q in zip(a.module_.parameters(), b.module_.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar", "margin", "none"])
def test_split_test_integer_weights_equal_repeated_rows(test):
    rng = np.random.RandomState(0)
    unsplit = rng.rand(60) < 0.7
    split = unsplit | (rng.rand(60) < 0.15)
    split[:3] = False
    w = rng.randint(0, 4, 60)
    d = decide_split(split, unsplit, test=test, sample_weight=w)
    r = decide_split(np.repeat(split, w), np.repeat(unsplit, w), test=test)
    assert (d.keep, d.n, d.wins, d.losses) == (r.keep, r.n, r.wins, r.losses)
    assert d.gain == pytest.approx(r.gain) and d.min_gain == pytest.approx(r.min_gain)
    if r.p_value is None:
        assert d.p_value is None
    else:
        assert d.p_value == pytest.approx(r.p_value, rel=1e-9)


def test_split_test_weights_change_the_decision():
    # The split wins 8 light rows and loses 4 heavy ones.
    unsplit = np.r_[np.zeros(8), np.ones(4), np.ones(40)].astype(bool)
    split = np.r_[np.ones(8), np.zeros(4), np.ones(40)].astype(bool)
    assert decide_split(split, unsplit, test="mcnemar", alpha=0.2).gain > 0
    heavy = np.r_[np.ones(8), 5 * np.ones(4), np.ones(40)]
    d = decide_split(split, unsplit, test="mcnemar", alpha=0.2, sample_weight=heavy)
    assert d.gain < 0 and not d.keep
    with pytest.raises(ValueError, match="non-negative"):
        decide_split(split, unsplit, sample_weight=-heavy)


def test_class_weight_survives_save_and_load(iris, tmp_path):
    X, y = iris
    clf = MixtureOfExpertsClassifier(
        **FULL_BATCH[MixtureOfExpertsClassifier], class_weight={0: 2.0, 2: 0.5}
    ).fit(X, y)
    path = save(clf, tmp_path / "weighted.hemoe")
    loaded = load(path)
    assert loaded.get_params()["class_weight"] == {0: 2.0, 2: 0.5}
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    buf = io.BytesIO()
    save(clf, buf)
    assert load(io.BytesIO(buf.getvalue())).class_weight == {0: 2.0, 2: 0.5}


@pytest.mark.parametrize(
    "experts",
    [dict(), dict(expert="head", search_expert="head"), dict(expert="lora", expert_kl=0.5)],
    ids=["finetune", "head", "lora-kl"],
)
def test_weighted_split_tree_survives_save_and_load(subpopulations, tmp_path, experts):
    X, y = subpopulations
    clf = HierarchicalEmbeddingMoEClassifier(
        clusterer=KMeans(n_init=1), n_clusters_grid=(2,), split_test="none",
        min_cluster_size=20, max_depth=1, max_epochs=2, lr=0.01,
        embedder__hidden_dims=(16,), class_weight="balanced", random_state=0,
        **experts,
    ).fit(X, y, sample_weight=np.where(X[:, 0] > 0, 2.5, 1.0))
    assert clf.n_leaves_ == 2
    assert isinstance(clf.tree_.nodes[0].search["decision"].n, float)
    if "expert_kl" in experts:  # the safe format does not cover KL/LoRA experts
        loaded = pickle.loads(pickle.dumps(clf))
    else:
        loaded = load(save(clf, tmp_path / "tree.hemoe"))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.tree_.nodes[0].search["decision"] == clf.tree_.nodes[0].search["decision"]
