"""Tests for hemoe_sk.cluster.routing: hard/soft assignment and
NeighborVoteRouter (routers for clusterers without ``predict``)."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import (
    DBSCAN,
    HDBSCAN,
    AgglomerativeClustering,
    KMeans,
    SpectralClustering,
)
from sklearn.datasets import load_digits, make_blobs
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError

from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.cluster.routing import (
    NeighborVoteRouter,
    hard_assign,
    n_routes,
    soft_assign,
)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(
        n_samples=300, centers=[[0, 0], [6, 0], [0, 6]], cluster_std=0.8,
        random_state=0,
    )
    return X, y


@pytest.fixture(scope="module")
def digits_pca():
    X, y = load_digits(return_X_y=True)
    return PCA(n_components=10, random_state=0).fit_transform(X / 16.0), y


# ---------------------------------------------------------------- routing


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
@pytest.mark.parametrize(
    "clusterer",
    [
        AgglomerativeClustering(),
        AgglomerativeClustering(linkage="average"),
        SpectralClustering(affinity="nearest_neighbors", n_neighbors=10),
        KMeans(n_init=3),
    ],
    ids=["ward", "average", "spectral", "kmeans"],
)
def test_training_points_route_to_their_cluster_on_blobs(blobs, clusterer):
    X, y = blobs
    router = NeighborVoteRouter(clusterer, n_clusters=3, random_state=0).fit(X)
    assert router.n_clusters_ == 3
    assert adjusted_rand_score(y, router.labels_) > 0.95
    agreement = np.mean(router.predict(X) == router.labels_)
    assert agreement >= 0.95
    assert router.training_agreement_ == pytest.approx(agreement)


@pytest.mark.parametrize(
    "clusterer, k",
    [
        (AgglomerativeClustering(), 10),
        (HDBSCAN(min_cluster_size=20, copy=True), None),
    ],
    ids=["ward", "hdbscan"],
)
def test_training_points_route_to_their_cluster_on_digits(digits_pca, clusterer, k):
    # Real data with overlapping clusters (10-d PCA of the digits): the vote
    # of 15 neighbours reproduces the clustering on >= 95% of the points,
    # noise points included for HDBSCAN (819 of 1,797 points are noise there).
    # Measured: ward 97.6%, HDBSCAN 97.9%.
    Z, _ = digits_pca
    router = NeighborVoteRouter(clusterer, n_clusters=k, random_state=0).fit(Z)
    assert np.mean(router.predict(Z) == router.labels_) >= 0.95
    if k is not None:
        assert router.n_clusters_ == k


def test_predict_proba_is_vote_fraction(blobs):
    X, _ = blobs
    router = NeighborVoteRouter(n_clusters=3, n_neighbors=7).fit(X)
    proba = router.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    # Fractions of 7 votes, up to the share by nearness, which is at most
    # _CENTRE_SHARE (1e-6) of a row: 7e-6 once multiplied by 7, a bound by
    # design (2.7e-6 measured), plus float rounding far below it.
    np.testing.assert_allclose(proba * 7, np.round(proba * 7), atol=7e-6 + 1e-12)
    np.testing.assert_array_equal(router.predict(X), proba.argmax(axis=1))
    ind = router.nn_.kneighbors(X[:5], return_distance=False)
    for i in range(5):
        counts = np.bincount(router.labels_[ind[i]], minlength=3) / 7
        np.testing.assert_allclose(proba[i], counts, atol=2e-6)
    # soft_assign reads it, with or without the number of clusters.
    np.testing.assert_allclose(soft_assign(router, X), proba, atol=1e-12)
    np.testing.assert_allclose(soft_assign(router, X, 3), proba, atol=1e-12)
    np.testing.assert_array_equal(hard_assign(router, X), router.predict(X))
    with pytest.raises(ValueError, match="3 routing columns for 4 clusters"):
        soft_assign(router, X, 4)


def test_zero_vote_clusters_are_ranked_by_nearness(blobs):
    # What overlap reads: among points with no vote for a cluster, the higher
    # the probability, the larger the cluster's share of the Student-t kernel
    # on the distances to the centres (DEC's q with alpha=1).
    X, _ = blobs
    router = NeighborVoteRouter(n_clusters=3).fit(X)
    proba = router.predict_proba(X)
    d2 = ((X[:, None, :] - router.cluster_centers_[None]) ** 2).sum(axis=2)
    t = 1.0 / (1.0 + d2)
    share = t / t.sum(axis=1, keepdims=True)
    for c in range(3):
        idx = np.flatnonzero(proba[:, c] < 1e-3)
        assert len(idx) > 50
        order = np.argsort(-proba[idx, c], kind="stable")
        assert np.all(np.diff(share[idx[order], c]) <= 1e-12)
    centres = np.array([X[router.labels_ == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(router.cluster_centers_, centres)


def test_ties_go_to_the_nearer_centre():
    # The point at 0.9 has two neighbours of each cluster among its 4 nearest;
    # the centre of B (1.05) is nearer than that of A (0.05), so B wins.
    X = np.array([[0.0], [0.1], [1.0], [1.1]])
    router = NeighborVoteRouter(KMeans(n_init=1), n_clusters=2, random_state=0,
                                n_neighbors=2)
    router.fit(X)
    router.n_neighbors_ = 4
    router.nn_.set_params(n_neighbors=4)
    b = router.labels_[2]
    assert router.predict([[0.9]])[0] == b
    assert router.predict([[0.2]])[0] == router.labels_[0]


def test_distance_weights_route_training_points_exactly(digits_pca):
    Z, _ = digits_pca
    router = NeighborVoteRouter(n_clusters=10, weights="distance").fit(Z)
    np.testing.assert_array_equal(router.predict(Z), router.labels_)
    assert router.training_agreement_ == 1.0


def test_noise_joins_nearest_non_noise_point():
    X, _ = make_blobs(n_samples=200, centers=[[0, 0], [8, 8]], cluster_std=0.5,
                      random_state=0)
    X = np.vstack([X, [[0.0, 3.0], [8.0, 11.0]]])  # two far-out points
    raw = DBSCAN(eps=0.6, min_samples=5).fit_predict(X)
    assert (raw == -1).any()
    router = NeighborVoteRouter(DBSCAN(eps=0.6, min_samples=5)).fit(X)
    assert router.n_noise_ == int((raw == -1).sum())
    assert router.labels_.min() == 0
    assert router.n_clusters_ == raw.max() + 1
    noise = np.flatnonzero(raw == -1)
    clean = np.flatnonzero(raw >= 0)
    for i in noise:
        j = clean[np.argmin(((X[clean] - X[i]) ** 2).sum(axis=1))]
        assert router.labels_[i] == router.labels_[j]
    assert router.labels_[-2] == router.labels_[0]
    assert router.labels_[-1] == router.labels_[199]


def test_all_noise_is_one_cluster():
    X = np.random.RandomState(0).rand(20, 2)
    with pytest.warns(ConvergenceWarning, match="every training point as noise"):
        router = NeighborVoteRouter(DBSCAN(eps=1e-6)).fit(X)
    assert router.n_clusters_ == 1
    np.testing.assert_array_equal(router.predict(X), 0)
    np.testing.assert_allclose(router.predict_proba(X), 1.0)


def test_labels_are_contiguous():
    # A clusterer whose labels skip values is renumbered 0..K-1.
    class Sparse(AgglomerativeClustering):
        def fit_predict(self, X, y=None):
            return super().fit_predict(X) * 5 + 3

    X, _ = make_blobs(n_samples=60, centers=3, random_state=0)
    router = NeighborVoteRouter(Sparse(n_clusters=3)).fit(X)
    np.testing.assert_array_equal(np.unique(router.labels_), [0, 1, 2])
    direct = AgglomerativeClustering(n_clusters=3).fit_predict(X)
    assert adjusted_rand_score(direct, router.labels_) == 1.0


def test_small_clusters_are_not_outvoted():
    # A 4-point cluster next to a 200-point one: 15 voters would drown it, so
    # the router votes with 4.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 1, (200, 2)), rng.normal(0, 0.05, (4, 2)) + [3.5, 0]])
    router = NeighborVoteRouter(AgglomerativeClustering(linkage="single"),
                                n_clusters=2).fit(X)
    sizes = np.bincount(router.labels_)
    assert router.n_neighbors_ == min(15, sizes.min())
    assert np.bincount(router.predict(X), minlength=2).min() == sizes.min()


def test_n_clusters_and_random_state_forwarded(blobs):
    X, _ = blobs
    router = NeighborVoteRouter(SpectralClustering(random_state=3), n_clusters=4,
                                random_state=7).fit(X)
    assert router.clusterer_.n_clusters == 4
    assert router.clusterer_.random_state == 7
    assert router.n_clusters_ == 4
    # The wrapped estimator is cloned, never modified.
    assert router.clusterer.n_clusters == 8 and router.clusterer.random_state == 3
    # None keeps the wrapped clusterer's own values.
    router = NeighborVoteRouter(SpectralClustering(n_clusters=2, random_state=3)).fit(X)
    assert router.clusterer_.n_clusters == 2 and router.clusterer_.random_state == 3
    # A clusterer without n_clusters: ignored, with a warning.
    with pytest.warns(UserWarning, match="n_clusters=4 was ignored.*HDBSCAN"):
        NeighborVoteRouter(HDBSCAN(copy=True), n_clusters=4).fit(X)


def test_node_search_interface(blobs):
    # What the node search does: clone, set n_clusters and random_state from
    # get_params, fit, route.
    X, _ = blobs
    base = NeighborVoteRouter(AgglomerativeClustering())
    params = base.get_params()
    assert "n_clusters" in params and "random_state" in params
    for k in (2, 3, 4):
        router = clone(base).set_params(n_clusters=k, random_state=0).fit(X)
        assert router.n_clusters_ == k
        assert n_routes(router) == k
        assert soft_assign(router, X, k).shape == (len(X), k)


def test_nested_params_grid(blobs):
    X, y = blobs
    router = NeighborVoteRouter(HDBSCAN(copy=True))
    assert "clusterer__min_cluster_size" in router.get_params()
    router.set_params(clusterer__min_cluster_size=40)
    assert router.clusterer.min_cluster_size == 40
    fitted = clone(router).fit(X)
    assert fitted.clusterer_.min_cluster_size == 40

    # A grid over the wrapped clusterer's own parameter, scored by ARI.
    def ari(est, X, y):
        return adjusted_rand_score(y, est.predict(X))

    with warnings.catch_warnings():
        # 120 exceeds every cluster: all noise, one cluster, ARI 0.
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(
            router, {"clusterer__min_cluster_size": [5, 30, 120]}, scoring=ari, cv=2
        ).fit(X, y)
    assert search.best_params_["clusterer__min_cluster_size"] in (5, 30)
    assert search.best_estimator_.n_clusters_ == 3


def test_pickle_round_trip(digits_pca, tmp_path):
    Z, _ = digits_pca
    router = NeighborVoteRouter(HDBSCAN(min_cluster_size=20, copy=True)).fit(Z)
    restored = pickle.loads(pickle.dumps(router))
    np.testing.assert_array_equal(restored.predict(Z), router.predict(Z))
    np.testing.assert_array_equal(restored.predict_proba(Z), router.predict_proba(Z))
    joblib.dump(router, tmp_path / "router.joblib")
    again = joblib.load(tmp_path / "router.joblib")
    np.testing.assert_array_equal(again.predict(Z), router.predict(Z))
    # Unfitted too.
    assert pickle.loads(pickle.dumps(NeighborVoteRouter())).n_neighbors == 15


def test_errors(blobs):
    X, _ = blobs
    with pytest.raises(NotFittedError):
        NeighborVoteRouter().predict(X)
    with pytest.raises(ValueError, match="n_neighbors"):
        NeighborVoteRouter(n_neighbors=0).fit(X)
    with pytest.raises(ValueError, match="clusterer"):
        NeighborVoteRouter(clusterer="ward").fit(X)
    router = NeighborVoteRouter(n_clusters=3).fit(X)
    with pytest.raises(ValueError, match="3 features"):
        router.predict(np.zeros((2, 3)))

    class NoLabels:
        def fit(self, X, y=None):
            return self

        def get_params(self, deep=True):
            return {}

        def set_params(self, **params):
            return self

    with pytest.raises(TypeError, match="labels_"):
        NeighborVoteRouter(NoLabels()).fit(X)


def test_soft_assign_sources(blobs):
    X, _ = blobs
    gm = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(soft_assign(gm, X), gm.predict_proba(X), rtol=1e-12)
    km = KMeans(3, n_init=2, random_state=0).fit(X)
    q = soft_assign(km, X)
    np.testing.assert_array_equal(q.argmax(axis=1), km.predict(X))
    assert n_routes(km) == 3

    class PredictOnly:
        def __init__(self, model):
            self.model = model

        def predict(self, X):
            return self.model.predict(X)

    one_hot = soft_assign(PredictOnly(km), X, 3)
    np.testing.assert_array_equal(one_hot.argmax(axis=1), km.predict(X))
    np.testing.assert_array_equal(one_hot.max(axis=1), 1.0)
    with pytest.raises(ValueError, match="pass n_clusters"):
        soft_assign(PredictOnly(km), X)


# -- clusterers without predict, passed directly to the classifier ----------


@pytest.mark.parametrize(
    "clusterer, grid, names",
    [
        (AgglomerativeClustering(), None, {"K=1", "K=2", "K=3"}),
        (HDBSCAN(min_cluster_size=20, copy=True), None,
         {"K=1", "K found by the clusterer"}),
        (HDBSCAN(copy=True), {"min_cluster_size": [20, 40]},
         {"K=1", "clusterer__min_cluster_size=20", "clusterer__min_cluster_size=40"}),
        (SpectralClustering(n_init=1, random_state=0), None, {"K=1", "K=2", "K=3"}),
    ],
    ids=["agglomerative", "hdbscan", "hdbscan-grid", "spectral"],
)
def test_classifier_wraps_clusterer_without_predict(clusterer, grid, names):
    # Three far-apart blobs of two classes each: every clusterer finds them.
    X, blob = make_blobs(n_samples=300, centers=[[0, 0], [10, 0], [0, 10]],
                         random_state=0)
    y = 2 * blob + (X[:, 1] > np.array([0, 0, 10])[blob])
    clf = HierarchicalEmbeddingMoEClassifier(
        clusterer=clusterer,
        cluster_param_grid=grid,
        n_clusters_grid=(2, 3),
        max_depth=1,
        max_epochs=4,
        expert_max_epochs=1,
        split_test="none",
        random_state=0,
    ).fit(X, y)
    root = clf.tree_.nodes[0]
    assert set(root.search["scores"]) == names
    assert isinstance(root.router.clusterer, NeighborVoteRouter)
    assert clf.n_leaves_ >= 2
    assert clf.predict(X[:7]).shape == (7,)
    # The estimator's parameter is left as the user gave it.
    assert clf.get_params()["clusterer"] is clusterer


def test_classifier_rejects_clusterer_without_fit():
    clf = HierarchicalEmbeddingMoEClassifier(clusterer=object(), max_epochs=1)
    with pytest.raises(InvalidParameterError, match="clusterer"):
        clf.fit(np.zeros((10, 2)), np.arange(10) % 2)
