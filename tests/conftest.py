"""Shared fixtures: small data sets and a fitted tree that is known to split."""

import numpy as np
import pytest
from _helpers import CLASSIC_NET
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

from hemoe_sk import HierarchicalEmbeddingMoEClassifier


def make_subpopulations(n_per_group=150, seed=0):
    """Two far-apart groups of points whose labels follow opposite rules.

    Feature 0 places a sample in group A (around -1) or B (around +1); the
    label is ``x2 > 0`` in group A and ``x2 <= 0`` in group B. One linear
    model on a barely trained network's embedding cannot fit both rules; one
    per group can, so a tree whose router finds the groups gains from a split.
    """
    rng = np.random.RandomState(seed)
    X = rng.randn(2 * n_per_group, 4).astype(np.float32)
    group_b = np.repeat([False, True], n_per_group)
    X[:, 0] += np.where(group_b, 4.0, -4.0)
    y = ((X[:, 2] > 0) ^ group_b).astype(np.int64)
    return X / 4.0, y


#: A configuration that splits the root on :func:`make_subpopulations`:
#: ``split_test="none"`` keeps the K=2 split whatever it scores, so neither
#: the defaults of the split test nor the networks' luck decide it.
SPLITTING_TREE = dict(
    **CLASSIC_NET,
    clusterer=KMeans(n_init=3),
    n_clusters_grid=(2,),
    split_test="none",
    min_cluster_size=20,
    validation_size=0.2,
    max_depth=1,
    max_epochs=1,
    lr=0.01,
    embedder__hidden_dims=(32,),
    expert=LogisticRegression(),
    random_state=0,
)


@pytest.fixture(scope="session")
def subpopulations():
    """``(X, y)`` of :func:`make_subpopulations`: 300 samples, 4 features."""
    return make_subpopulations()


@pytest.fixture(scope="session")
def split_tree(subpopulations):
    """A fitted HierarchicalEmbeddingMoEClassifier with more than one leaf."""
    X, y = subpopulations
    clf = HierarchicalEmbeddingMoEClassifier(**SPLITTING_TREE).fit(X, y)
    assert clf.n_leaves_ > 1, (
        "the split_tree fixture must split its root:\n" + clf.export_text()
    )
    return clf
