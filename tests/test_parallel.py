"""The per-node search on joblib's backends: threads, loky, Dask and Ray.

Every backend must grow the tree ``n_jobs=1`` grows for the same seed, and a
backend running the search in other processes must hand back what its workers
fitted (routers, experts, held-out outcomes), so that the calling process
trains nothing of the search again.

The Dask and Ray tests are marked ``dask`` and ``ray`` and skipped where
those packages are missing (``pip install hemoe_sk[parallel]``).
"""

import numpy as np
import pytest
import torch
from _helpers import CLASSIC_NET
from joblib import parallel_config
from numpy.testing import assert_allclose, assert_array_equal, assert_equal
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from hemoe_sk import DECClusterer, HierarchicalEmbeddingMoEClassifier
from hemoe_sk.nn import MLPEmbedder
from hemoe_sk.node import NodeContext, NodeExpertsClassifier, node_splits, search_node

#: A small tree that splits its root (``split_test="none"`` keeps the best
#: split) with fine-tuned network experts, so that networks travel to the
#: workers and back. Two K candidates besides K=1.
PARAMS = dict(**CLASSIC_NET,
    clusterer=KMeans(n_init=2),
    n_clusters_grid=(2, 3),
    split_test="none",
    min_cluster_size=20,
    validation_size=0.2,
    max_depth=1,
    max_epochs=2,
    expert_max_epochs=1,
    lr=0.01,
    embedder__hidden_dims=(16,),
    random_state=0,
)


@pytest.fixture(scope="module")
def reference(subpopulations):
    """The tree fitted with ``n_jobs=1``."""
    X, y = subpopulations
    clf = HierarchicalEmbeddingMoEClassifier(**PARAMS, n_jobs=1).fit(X, y)
    assert clf.n_leaves_ > 1, "the parallel tests need a tree that splits"
    return clf


def assert_same_tree(a, b, X):
    """Same structure, same routing, probabilities within 1e-6."""
    assert a.tree_.node_count == b.tree_.node_count
    for na, nb in zip(a.tree_.nodes, b.tree_.nodes):
        assert na.children == nb.children
        assert na.n_samples == nb.n_samples
        assert na.search.get("scores", {}).keys() == nb.search.get("scores", {}).keys()
        for key, score in na.search.get("scores", {}).items():
            assert score == pytest.approx(nb.search["scores"][key], abs=1e-12)
    assert_array_equal(a.apply(X), b.apply(X))
    assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_joblib_backends_grow_the_same_tree(backend, reference, subpopulations):
    X, y = subpopulations
    with parallel_config(backend=backend, n_jobs=2):
        clf = HierarchicalEmbeddingMoEClassifier(**PARAMS).fit(X, y)
    assert_same_tree(reference, clf, X)


#: ``PARAMS`` with the default router kind, a (tiny) DEC: the search
#: pretrains its autoencoder once per fit set, in the calling process, and
#: hands it to every task.
DEC_PARAMS = dict(
    PARAMS,
    clusterer=DECClusterer(
        hidden_dims=(8,), embedding_dim=2, pretrain_epochs=3, max_iter=20, n_init=1
    ),
)


def test_dec_routers_on_loky_use_the_autoencoder_pretrained_once(subpopulations):
    """The pretrained autoencoders are found by a key of the fit rows that
    is the same in every process (Python's ``hash`` of bytes is not), so a
    loky worker refines the parent's autoencoder instead of pretraining its
    own, and grows the tree ``n_jobs=1`` grows."""
    X, y = subpopulations
    one = HierarchicalEmbeddingMoEClassifier(**DEC_PARAMS, n_jobs=1).fit(X, y)
    with parallel_config(backend="loky", n_jobs=2):
        loky = HierarchicalEmbeddingMoEClassifier(**DEC_PARAMS).fit(X, y)
    assert loky.n_leaves_ > 1
    assert_same_tree(one, loky, X)
    routers = [est.tree_.nodes[0].router.clusterer for est in (one, loky)]
    for router in routers:
        assert isinstance(router, DECClusterer)
        # Pretraining ran in the calling process, not in the task that fitted
        # this router (a fit that pretrains records its losses here).
        assert router.history_["pretrain_loss"] == []
    assert_equal(routers[1].history_, routers[0].history_)  # NaN equals NaN here
    assert_allclose(routers[1].cluster_centers_, routers[0].cluster_centers_,
                    rtol=0, atol=1e-6)


class ProcessLog(Callback):
    """Logs the rows of every training of a net, or of its deep copies (the
    tree's fine-tuned experts), in the process where the training runs: the
    log is the class's, and each worker process has its own."""

    rows = []

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        ProcessLog.rows.append(len(X))


class CountingKMeans(KMeans):
    """k-means that logs its fits in the process where they run."""

    fits = []

    def fit(self, X, y=None, sample_weight=None):
        CountingKMeans.fits.append(self.n_clusters)
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.fixture
def logged_params():
    """``PARAMS`` with an embedder net (a plain skorch net, as a user may pass
    one) and a k-means router that log, per process, what they train; and
    the two logs of this process."""
    ProcessLog.rows, CountingKMeans.fits = [], []
    params = {k: v for k, v in PARAMS.items() if not k.startswith("embedder__")}
    params["clusterer"] = CountingKMeans(n_init=2)
    embedder = NeuralNetClassifier(
        MLPEmbedder,
        module__hidden_dims=(16,),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=PARAMS["lr"],
        max_epochs=PARAMS["max_epochs"],
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[("log", ProcessLog())],
    )
    yield dict(params, embedder=embedder), ProcessLog.rows, CountingKMeans.fits
    ProcessLog.rows, CountingKMeans.fits = [], []


def test_the_parent_does_not_refit_what_loky_workers_fitted(
    logged_params, subpopulations
):
    X, y = subpopulations
    params, trained_rows, kmeans_fits = logged_params
    # In one process, the logs see the whole search: the root network, the
    # experts of K=1, 2 and 3 (1 + 2 + 3), the leaves' refits.
    one = HierarchicalEmbeddingMoEClassifier(**params, n_jobs=1).fit(X, y)
    assert one.n_leaves_ > 1
    assert len(trained_rows) == 1 + 6 + one.n_leaves_
    assert sorted(set(kmeans_fits)) == [2, 3]
    trained_rows.clear()
    kmeans_fits.clear()
    # With loky, this process trained the root network and refit the leaves
    # on all of their rows, nothing else: the chosen router and experts (and
    # the paired test's outcomes) came back from the workers.
    with parallel_config(backend="loky", n_jobs=2):
        clf = HierarchicalEmbeddingMoEClassifier(**params).fit(X, y)
    leaves = [clf.tree_.nodes[i] for i in clf.tree_.leaves]
    assert trained_rows == [
        clf.tree_.nodes[0].training[0].n_rows, *(leaf.n_samples for leaf in leaves)
    ]
    assert kmeans_fits == []
    # The search's experts still left their records on the leaves.
    assert all("search, expert" in leaf.training[0].stage for leaf in leaves)
    assert_same_tree(one, clf, X)


def test_search_results_match_grid_search_cv(subpopulations):
    """``search_node``'s ``cv_results`` has GridSearchCV's keys and values."""
    X, y = subpopulations
    rows = np.arange(0, len(X), 2)
    context = NodeContext(
        X=X, y=y, rows=rows, E=X[rows], net=None, n_classes=2,
        expert=LogisticRegression(),
    )
    splits = node_splits(y[rows], 0.25, 2, seed=3)
    result = search_node(
        context, n_clusters_grid=(2, 3), clusterer=KMeans(n_init=2),
        min_cluster_size=5, validation_size=None, cv=2, seed=3, splits=splits,
        split_test="none",
    )
    assert not context.pretrained and not context.row_correct  # emptied
    candidate = NodeExpertsClassifier(
        clusterer=KMeans(n_init=2), min_cluster_size=3, context=context,
        random_state=3,
    )
    ours = result.cv_results
    theirs = GridSearchCV(
        candidate, [{"n_clusters": [1, 2, 3]}], cv=splits, refit=False
    ).fit(np.arange(len(rows)).reshape(-1, 1), y[rows]).cv_results_
    assert list(ours) == list(theirs)
    for key in theirs:
        if key == "params":
            assert ours[key] == theirs[key]
        elif "time" not in key:
            assert ours[key].dtype == theirs[key].dtype, key
            assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert (ours["mean_fit_time"] > 0).all()
    # split_test="none" keeps the best split candidate, read from the results.
    splits_only = [i for i, p in enumerate(ours["params"]) if p["n_clusters"] != 1]
    best = max(splits_only, key=lambda i: ours["mean_test_score"][i])
    assert result.n_clusters == ours["params"][best]["n_clusters"]


@pytest.mark.dask
def test_dask_grows_the_same_tree(reference, subpopulations):
    distributed = pytest.importorskip("distributed")
    X, y = subpopulations
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
        parallel_config(backend="dask", n_jobs=2),
    ):
        clf = HierarchicalEmbeddingMoEClassifier(**PARAMS).fit(X, y)
    assert_same_tree(reference, clf, X)


@pytest.mark.ray
def test_ray_grows_the_same_tree(reference, subpopulations):
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    X, y = subpopulations
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()
        with parallel_config(backend="ray", n_jobs=2):
            clf = HierarchicalEmbeddingMoEClassifier(**PARAMS).fit(X, y)
    finally:
        ray.shutdown()
    assert_same_tree(reference, clf, X)
