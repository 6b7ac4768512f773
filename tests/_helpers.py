"""Helpers shared by several test files (not tests themselves)."""

import contextlib

import pytest

import hemoe_sk.node as node_module
from hemoe_sk.node import NodeExpertsClassifier


@contextlib.contextmanager
def splits_preferred():
    """Keep a split whenever one is eligible.

    Whether a split beats the unsplit node on tiny data is a coin toss; tests
    about what happens *inside* a tree need trees that route. A split
    candidate's held-out score gets a bonus of 1 and the paired split test
    always passes: the same tree ``split_test="none"`` grows, for estimators
    built where that parameter cannot be passed.
    """
    original = NodeExpertsClassifier.score
    original_decide = node_module.decide_split

    def score(self, P, y, sample_weight=None):
        bonus = 0.0 if getattr(self, "router_", None) is None else 1.0
        return original(self, P, y, sample_weight) + bonus

    def keep(*args, **kwargs):
        decision = original_decide(*args, **kwargs)
        decision.keep = True
        return decision

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NodeExpertsClassifier, "score", score)
        mp.setattr(node_module, "decide_split", keep)
        yield


def weighted_vs_repeated(estimator, method):
    """Fit ``estimator`` on the data of scikit-learn's
    ``check_sample_weight_equivalence_on_dense_data`` twice, with integer
    ``sample_weight`` and with the rows repeated, and return both outputs of
    ``method`` on the unweighted rows.

    The data, weights and shuffling are the check's own (15 rows of 30
    uniform features, 3 classes, weights 0 to 4). The check compares with
    ``rtol=1e-7``, a tolerance float32 training meets or misses by the
    rounding of the machine's kernels (the weighted mean and the mean over
    repeated rows sum in different orders); tests that call this helper
    compare at a float32 tolerance instead and say which.
    """
    import numpy as np
    from sklearn.base import clone
    from sklearn.utils import shuffle

    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    sw = rng.randint(0, 5, size=15)
    X_rep, y_rep = X.repeat(sw, axis=0), y.repeat(sw)
    X_w, y_w, sw_w = shuffle(X, y, sw, random_state=0)
    repeated = clone(estimator).fit(X_rep, y_rep)
    weighted = clone(estimator).fit(X_w, y_w, sample_weight=sw_w)
    return getattr(weighted, method)(X), getattr(repeated, method)(X)
