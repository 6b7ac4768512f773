"""Tests for hemoe_sk.cluster.signals: split signals other than plain
clustering of the embeddings (BalancedKMeans, ClassGroupClusterer,
WithinClassClusterer)."""

import doctest
import types
import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import hemoe_sk.cluster.signals as signals
from hemoe_sk import BalancedKMeans, ClassGroupClusterer, WithinClassClusterer
from hemoe_sk.cluster.routing import n_routes, soft_assign

# scikit-learn's estimator checks run on these clusterers in tests/test_common.py.


def test_docstring_examples_run():
    result = doctest.testmod(signals, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------- data


def _sides(n_per_part=60, class_gap=20.0, side_gap=2.0, seed=0):
    """Two classes far apart (the embedding is clustered by class); within
    each class a "left" and a "right" sub-population, offset the same way.

    Returns X, the class of each row and its side (0 left, 1 right).
    """
    rng = np.random.RandomState(seed)
    means = np.array(
        [[-side_gap / 2, 0], [side_gap / 2, 0],
         [-side_gap / 2, class_gap], [side_gap / 2, class_gap]]
    )
    part = np.repeat(np.arange(4), n_per_part)
    X = means[part] + 0.25 * rng.normal(size=(len(part), 2))
    return X, part // 2, part % 2


def _mixed(labels, y):
    """Number of classes in each group."""
    return [np.unique(y[labels == g]).size for g in np.unique(labels)]


# ---------------------------------------------------------------- BalancedKMeans


@pytest.mark.parametrize("n, k", [(210, 3), (211, 3), (97, 5), (40, 40)])
def test_balanced_sizes_differ_by_at_most_one(n, k):
    # Strongly unbalanced blobs (70% in one): the training assignment is
    # balanced all the same.
    sizes = [int(0.7 * n), n - int(0.7 * n) - n // 10, n // 10]
    X, _ = make_blobs(n_samples=sizes, random_state=0)
    km = BalancedKMeans(n_clusters=k, random_state=0).fit(X)
    counts = np.bincount(km.labels_, minlength=k)
    assert counts.sum() == n
    assert counts.max() - counts.min() <= 1
    assert km.n_clusters_ == k == n_routes(km)
    assert km.cluster_centers_.shape == (k, 2)


def test_balanced_kmeans_finds_balanced_blobs():
    X, y = make_blobs(n_samples=[100, 100, 100, 100], cluster_std=1.0, random_state=3)
    km = BalancedKMeans(n_clusters=4, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) > 0.99
    assert adjusted_rand_score(y, km.predict(X)) > 0.99
    assert km.training_agreement_ > 0.99
    d2 = ((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    assert km.inertia_ == pytest.approx(d2[np.arange(len(X)), km.labels_].sum())


def test_balanced_kmeans_is_deterministic_and_accepts_float32():
    X, _ = make_blobs(n_samples=150, centers=5, random_state=1)
    a = BalancedKMeans(n_clusters=3, random_state=7).fit(X)
    b = BalancedKMeans(n_clusters=3, random_state=7).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    c = BalancedKMeans(n_clusters=3, random_state=7).fit(X.astype(np.float32))
    assert adjusted_rand_score(a.labels_, c.labels_) > 0.95
    assert c.predict_proba(X.astype(np.float32)).dtype == np.float64


def test_balanced_kmeans_routing_matches_centroid_routers():
    X, _ = make_blobs(n_samples=120, centers=3, random_state=2)
    km = BalancedKMeans(n_clusters=3, random_state=0).fit(X)
    q = km.predict_proba(X)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    # What soft_assign gives any router that has only cluster_centers_.
    centres_only = types.SimpleNamespace(cluster_centers_=km.cluster_centers_)
    np.testing.assert_allclose(q, soft_assign(centres_only, X), rtol=1e-10)
    nearest = ((X[:, None] - km.cluster_centers_[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(km.predict(X), nearest)
    np.testing.assert_array_equal(q.argmax(axis=1), nearest)


def _optimal_balanced_cost(D):
    """Exact minimum of a floor/ceil balanced assignment (Hungarian method on
    repeated centres; k - r dummy rows take the k - r unused extra slots)."""
    n, k = D.shape
    q, r = divmod(n, k)
    cols = np.concatenate([np.repeat(np.arange(k), q), np.arange(k)])
    extra = np.r_[np.zeros(q * k, dtype=bool), np.ones(k, dtype=bool)]
    dummy = np.where(extra, 0.0, 1e12)[None, :].repeat(k - r, axis=0)
    M = np.vstack([D[:, cols], dummy])
    rows, chosen = linear_sum_assignment(M)
    keep = rows < n
    return D[rows[keep], cols[chosen[keep]]].sum()


def test_balanced_assignment_is_close_to_optimal():
    # One assignment step from arbitrary (often crowded) centres, against the
    # exact optimum. Measured: mean 1.03, worst 1.21 over 40 such problems;
    # plain greedy over sorted distances: mean 1.4, worst 1.9.
    rng = np.random.RandomState(1)
    ratios = []
    for trial in range(20):
        n, k = rng.randint(20, 150), rng.randint(2, 7)
        X = rng.normal(size=(n, 2))
        if trial % 2:
            C = 0.5 * rng.normal(size=(k, 2)) + [1.0, 0.0]
        else:
            C = X[rng.choice(n, k, replace=False)]
        D = ((X[:, None] - C[None]) ** 2).sum(-1)
        labels, _ = signals._balanced_assign(D)
        counts = np.bincount(labels, minlength=k)
        assert counts.max() - counts.min() <= 1
        ratios.append(D[np.arange(n), labels].sum() / _optimal_balanced_cost(D))
    assert min(ratios) >= 1.0 - 1e-9
    assert np.mean(ratios) < 1.06
    assert max(ratios) < 1.35


def test_balanced_kmeans_too_few_samples():
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=4"):
        BalancedKMeans(n_clusters=4).fit(np.arange(6.0).reshape(3, 2))


# ---------------------------------------------------------------- ClassGroupClusterer


@pytest.fixture(scope="module")
def confused_pairs():
    # Classes 0 and 1 overlap, and so do 2 and 3; the pairs are far apart.
    rng = np.random.RandomState(0)
    means = np.array([[0.0, 0.0], [1.0, 0.0], [8.0, 8.0], [9.0, 8.0]])
    y = np.repeat([0, 1, 2, 3], 60)
    X = means[y] + rng.normal(size=(len(y), 2))
    return X, y


def test_class_groups_are_the_confused_pairs(confused_pairs):
    X, y = confused_pairs
    cg = ClassGroupClusterer(n_clusters=2, random_state=0).fit(X, y)
    assert [g.tolist() for g in cg.class_groups_] == [[0, 1], [2, 3]]
    np.testing.assert_array_equal(cg.group_of_class_, [0, 0, 1, 1])
    np.testing.assert_array_equal(cg.labels_, cg.group_of_class_[y])
    M = cg.confusion_
    np.testing.assert_allclose(M.sum(axis=1), 1.0)
    # Within a pair the head is confused, across pairs it is not.
    assert M[0, 1] > 0.1 and M[2, 3] > 0.1
    assert M[0, 2] < 0.01 and M[1, 3] < 0.01
    assert cg.n_clusters_ == 2 == n_routes(cg)


def test_class_group_routing_sums_head_probabilities(confused_pairs):
    X, y = confused_pairs
    cg = ClassGroupClusterer(n_clusters=2, random_state=0).fit(X, y)
    P = cg.head_.predict_proba(X)
    q = cg.predict_proba(X)
    np.testing.assert_allclose(q[:, 0], P[:, 0] + P[:, 1])
    np.testing.assert_allclose(q[:, 1], P[:, 2] + P[:, 3])
    np.testing.assert_array_equal(cg.predict(X), q.argmax(axis=1))
    np.testing.assert_allclose(soft_assign(cg, X), q)
    assert cg.training_agreement_ > 0.99  # the pairs are easy to tell apart


def test_class_group_string_labels_and_float32(confused_pairs):
    X, y = confused_pairs
    names = np.array(["cat", "dog", "car", "van"])[y]
    cg = ClassGroupClusterer(n_clusters=2, random_state=0).fit(X.astype(np.float32), names)
    groups = sorted(sorted(g.tolist()) for g in cg.class_groups_)
    assert groups == [["car", "van"], ["cat", "dog"]]
    assert cg.predict_proba(X.astype(np.float32)).shape == (len(X), 2)


def test_class_group_fewer_classes_than_groups(confused_pairs):
    X, y = confused_pairs
    keep = y < 3
    with pytest.warns(UserWarning, match="3 classes cannot form n_clusters=4"):
        cg = ClassGroupClusterer(n_clusters=4, random_state=0).fit(X[keep], y[keep])
    assert cg.n_clusters_ == 3
    assert cg.predict_proba(X).shape == (len(X), 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassGroupClusterer().fit(X, np.zeros(len(X)))


BLOB_CENTRES = [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]


def test_class_group_without_labels_falls_back_to_kmeans_classes():
    X, y = make_blobs(n_samples=150, centers=BLOB_CENTRES, random_state=0)
    cg = ClassGroupClusterer(n_clusters=3, random_state=0).fit(X)
    assert cg.n_clusters_ == 3
    assert adjusted_rand_score(y, cg.labels_) > 0.95
    a = ClassGroupClusterer(n_clusters=3, random_state=0).fit(X)
    np.testing.assert_array_equal(a.predict(X), cg.predict(X))


# ---------------------------------------------------------------- WithinClassClusterer


def test_within_class_groups_matching_subpopulations():
    # A1 near B1 and A2 near B2, the two sides far apart.
    X, y, side = _sides(class_gap=2.0, side_gap=20.0)
    wc = WithinClassClusterer(n_clusters=2, random_state=0).fit(X, y)
    assert adjusted_rand_score(side, wc.labels_) == pytest.approx(1.0)
    assert _mixed(wc.labels_, y) == [2, 2]
    # Here plain k-means on the embedding finds the same groups.
    km = KMeans(n_clusters=2, n_init=3, random_state=0).fit(X)
    assert adjusted_rand_score(side, km.labels_) == pytest.approx(1.0)


def test_within_class_mixes_classes_where_the_embedding_is_clustered_by_class():
    # The classes are far apart (a collapsed embedding): k-means hands each
    # group a single class, WithinClassClusterer still groups the left parts
    # of both classes against the right parts.
    X, y, side = _sides(class_gap=20.0, side_gap=2.0)
    km = KMeans(n_clusters=2, n_init=3, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) == pytest.approx(1.0)
    assert _mixed(km.labels_, y) == [1, 1]

    wc = WithinClassClusterer(n_clusters=2, random_state=0).fit(X, y)
    assert adjusted_rand_score(side, wc.labels_) == pytest.approx(1.0)
    assert _mixed(wc.labels_, y) == [2, 2]
    # Routing without labels reproduces the training groups.
    np.testing.assert_array_equal(wc.predict(X), wc.labels_)
    assert wc.training_agreement_ == 1.0
    # Grouping the raw sub-centroids instead keeps the classes apart.
    raw = WithinClassClusterer(n_clusters=2, center_classes=False, random_state=0)
    assert _mixed(raw.fit(X, y).labels_, y) == [1, 1]


def test_within_class_attributes_and_routing():
    X, y, _ = _sides()
    wc = WithinClassClusterer(n_clusters=2, n_subclusters=3, random_state=0).fit(X, y)
    assert wc.subcluster_centers_.shape == (6, 2)
    np.testing.assert_array_equal(wc.subcluster_class_, [0, 0, 0, 1, 1, 1])
    assert set(wc.subcluster_group_) == {0, 1}
    d2 = ((X[:, None] - wc.subcluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(wc.predict(X), wc.subcluster_group_[d2.argmin(1)])
    kernel = 1.0 / (1.0 + d2)
    expected = np.stack(
        [kernel[:, wc.subcluster_group_ == g].sum(1) for g in range(wc.n_clusters_)], 1
    )
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(wc.predict_proba(X), expected)
    np.testing.assert_allclose(soft_assign(wc, X).sum(1), 1.0)


def test_within_class_small_class_uses_fewer_subclusters():
    X, y, _ = _sides()
    X = np.vstack([X, [[50.0, 50.0]]])
    y = np.r_[y, 2]  # a class with a single row
    wc = WithinClassClusterer(n_clusters=2, n_subclusters=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(np.bincount(wc.subcluster_class_), [2, 2, 1])
    np.testing.assert_allclose(wc.subcluster_centers_[-1], [50.0, 50.0])


def test_within_class_without_labels_is_kmeans():
    X, y = make_blobs(n_samples=150, centers=BLOB_CENTRES, random_state=0)
    wc = WithinClassClusterer(n_clusters=3, random_state=0).fit(X.astype(np.float32))
    assert len(wc.subcluster_centers_) == 3  # max(n_subclusters, n_clusters)
    assert adjusted_rand_score(y, wc.labels_) > 0.95
    with pytest.raises(ValueError, match="should be >= n_clusters=5"):
        WithinClassClusterer(n_clusters=5).fit(np.zeros((10, 2)))


def test_within_class_is_deterministic():
    X, y, _ = _sides(seed=3)
    a = WithinClassClusterer(n_clusters=2, random_state=5).fit(X, y)
    b = WithinClassClusterer(n_clusters=2, random_state=5).fit(X, y)
    np.testing.assert_array_equal(a.subcluster_centers_, b.subcluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)


@pytest.mark.parametrize("Est", [BalancedKMeans, ClassGroupClusterer, WithinClassClusterer])
def test_fit_with_node_labels_then_route_without(Est):
    # What a node does: fit on its embeddings with its class labels, then
    # route new embeddings (float32) with predict / predict_proba.
    X, y, _ = _sides()
    Z = X.astype(np.float32)
    est = Est(n_clusters=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(Z, y)
    q = est.predict_proba(Z[:7])
    assert q.shape == (7, est.n_clusters_)
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert est.predict(Z[:7]).dtype == np.int64
    assert est.labels_.shape == (len(Z),)
