"""One node of the hierarchy: "cluster, then one expert per cluster".

:class:`NodeExpertsClassifier` is the estimator the per-node K search scores
for every candidate number of clusters (``n_clusters=1`` is the unsplit node:
one expert trained on all of the node's data). :func:`search_node` runs that
search (``GridSearchCV``'s loop, through joblib, every task returning what it
fitted) and returns the chosen partition together with the search's
``cv_results_``.

Data never travels through the search as a matrix. The search sees a column
of row *positions* into the node; the node's rows of ``X``, its embeddings and
its network live once in a :class:`NodeContext` that every clone of the node
estimator shares (``copy.deepcopy`` of a context returns the context itself).
Experts train on :class:`~hemoe_sk.nn.training.RowSubset` views, so however many
candidates and experts there are, ``X`` exists once and only embeddings are
kept per node.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.cluster import KMeans
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import (
    KFold,
    ParameterGrid,
    ShuffleSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
)
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import has_fit_parameter

from .cluster.routing import hard_assign, soft_assign
from .nn.build import make_classifier_net, make_regressor_net
from .nn.experts import make_expert_net
from .nn.inference import predict_output
from .nn.modules import LinearHead
from .nn.training import RowSubset, train_net
from .tree import TrainingRecord

__all__ = [
    "REGRESSION_SCORINGS",
    "NodeContext",
    "PairRouter",
    "NodeExpertsClassifier",
    "SplitDecision",
    "decide_split",
    "regression_outcomes",
    "regression_score",
    "search_node",
]


# --------------------------------------------------------------------------
# Experts. Each maps (X rows, node embeddings) to the tree's output matrix:
# probabilities over all classes of the tree for a classifier (so a leaf that
# never saw a class still gives a column for it), standardised predictions of
# every target for a regressor. The method keeps its classifier name,
# ``predict_proba``, for both.
# --------------------------------------------------------------------------


class ConstantExpert:
    """A cluster with a single class predicts it with probability 1."""

    needs_embedding = False
    net = None

    def __init__(self, class_index, n_classes):
        self.class_index = int(class_index)
        self.n_classes = int(n_classes)

    def predict_proba(self, X, rows, E):
        n = len(X) if rows is None else len(rows)
        proba = np.zeros((n, self.n_classes))
        proba[:, self.class_index] = 1.0
        return proba


#: Experts that are networks started from the node's network (see
#: :func:`hemoe_sk.nn.experts.make_expert_net`).
NET_EXPERTS = ("finetune", "residual", "lora")


def epochs_run(net):
    """Epochs in a skorch net's history (0 before it is initialised): a
    fine-tuned copy continues its parent's history."""
    return len(net.history_) if hasattr(net, "history_") else 0


class NetExpert:
    """A network classifying raw inputs: the root net or a fine-tuned copy.

    A fine-tuned expert's network is also the embedder of the child node it
    leads to.
    """

    needs_embedding = False

    def __init__(self, net):
        self.net = net

    def predict_proba(self, X, rows, E):
        return predict_output(self.net, X, rows=rows)


class HeadExpert:
    """A new linear head trained on the node's frozen embeddings."""

    needs_embedding = True
    net = None

    def __init__(self, head):
        self.head = head

    def predict_proba(self, X, rows, E):
        return predict_output(self.head, E)


class SklearnExpert:
    """Any scikit-learn classifier (or regressor) fitted on the node's
    embeddings."""

    needs_embedding = True
    net = None

    def __init__(self, estimator, n_classes):
        self.estimator = estimator
        self.n_classes = int(n_classes)

    def predict_proba(self, X, rows, E):
        if not hasattr(self.estimator, "classes_"):  # a regressor
            return np.asarray(self.estimator.predict(E), dtype=np.float64).reshape(
                len(E), self.n_classes
            )
        proba = np.zeros((len(E), self.n_classes))
        proba[:, self.estimator.classes_] = self.estimator.predict_proba(E)
        return proba


class Router:
    """A node's fitted router: an optional reducer, then a clusterer.

    Hard routing follows the clusterer's ``predict``; soft routing its
    probabilities (see :func:`hemoe_sk.cluster.routing.soft_assign`).
    """

    def __init__(self, clusterer, reducer, n_clusters):
        self.clusterer = clusterer
        self.reducer = reducer
        self.n_clusters = int(n_clusters)

    def _reduce(self, E):
        return E if self.reducer is None else self.reducer.transform(E)

    def predict(self, E):
        return hard_assign(self.clusterer, self._reduce(E))

    def predict_proba(self, E):
        return soft_assign(self.clusterer, self._reduce(E), self.n_clusters)


def routed_outputs(experts, labels, X, rows, E, n_outputs):
    """Each row's output from the expert its route ``labels`` names.

    ``rows`` are the rows of ``X`` and ``E`` the matching embeddings; an
    expert's output is class probabilities (or a regressor's predictions)
    over ``n_outputs`` columns.
    """
    out = np.zeros((len(rows), n_outputs))
    for c, expert in enumerate(experts):
        mask = labels == c
        if mask.any():
            out[mask] = expert.predict_proba(X, rows[mask], E[mask])
    return out


def ranked_pairs(proba):
    """Per row, the two most probable clusters (smaller index first) and the
    gap between their probabilities."""
    order = np.argsort(-proba, axis=1, kind="stable")[:, :2]
    top = np.take_along_axis(proba, order, axis=1)
    return np.sort(order, axis=1), top[:, 0] - top[:, 1]


def most_confused_pair(proba, margin):
    """The pair of clusters a router hesitates between most.

    A row is *ambiguous* between clusters ``a`` and ``b`` when they are its
    two most probable clusters and their probabilities differ by less than
    ``margin``. Returns ``((a, b), n_rows)`` for the pair with the most
    ambiguous rows, or ``(None, 0)`` when no row is ambiguous.
    """
    if proba.shape[1] < 2:
        return None, 0
    pairs, gap = ranked_pairs(proba)
    close = gap < margin
    if not close.any():
        return None, 0
    found, counts = np.unique(pairs[close], axis=0, return_counts=True)
    best = int(np.argmax(counts))
    return (int(found[best, 0]), int(found[best, 1])), int(counts[best])


class PairRouter:
    """A router with one more route, to a cluster-pair expert.

    Rows that ``router`` finds ambiguous between the clusters ``pair`` (the
    two are their most probable clusters, within ``margin`` of each other)
    go to route ``K`` (the last child: an expert trained on the union of the
    two clusters); every other row is routed as ``router`` routes it. Soft
    routing moves an ambiguous row's probability of both clusters to the
    pair's route.
    """

    def __init__(self, router, pair, margin):
        self.router = router
        self.pair = (int(pair[0]), int(pair[1]))
        self.margin = float(margin)
        self.n_clusters = int(router.n_clusters) + 1

    def ambiguous(self, proba):
        pairs, gap = ranked_pairs(proba)
        return (gap < self.margin) & (pairs[:, 0] == self.pair[0]) & (
            pairs[:, 1] == self.pair[1]
        )

    def predict(self, E):
        labels = np.array(self.router.predict(E), dtype=np.intp)
        labels[self.ambiguous(self.router.predict_proba(E))] = self.n_clusters - 1
        return labels

    def predict_proba(self, E):
        proba = self.router.predict_proba(E)
        out = np.concatenate([proba, np.zeros((len(proba), 1))], axis=1)
        amb = self.ambiguous(proba)
        a, b = self.pair
        out[amb, -1] = proba[amb, a] + proba[amb, b]
        out[amb, a] = 0.0
        out[amb, b] = 0.0
        return out


def overlap_positions(labels, proba, cluster, overlap, outside_share=0.0, seed=0):
    """Indices (into ``labels``) an expert for ``cluster`` trains on.

    Its own cluster, plus, when ``overlap > 0``, the points of other clusters
    with the highest soft assignment to it, up to ``overlap`` times the
    cluster's size, so boundary points are not orphaned; plus, when
    ``outside_share > 0``, that share of the remaining other clusters' points,
    drawn at random (seeded by ``seed``).
    """
    own = np.flatnonzero(labels == cluster)
    n_extra = int(overlap * len(own))
    parts = [own]
    others = np.flatnonzero(labels != cluster)
    if n_extra and proba is not None:
        order = np.argsort(-proba[others, cluster], kind="stable")
        parts.append(others[order[:n_extra]])
        others = np.sort(others[order[n_extra:]])
    n_share = int(round(outside_share * len(others)))
    if n_share:
        rng = np.random.RandomState(seed)
        parts.append(others[rng.choice(len(others), n_share, replace=False)])
    return np.sort(np.concatenate(parts)) if len(parts) > 1 else own


@dataclass(eq=False)
class NodeContext:
    """Everything one node's search shares, held once.

    ``copy.deepcopy`` (which :func:`sklearn.base.clone` applies to parameters)
    returns the context itself, so candidates never copy the data. A joblib
    backend running tasks in other processes pickles it instead (see
    :func:`search_node` for what travels).

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features), float32
        The whole training matrix of the tree.
    y : ndarray of shape (n_samples,), int64, or (n_samples, n_outputs), float32
        Encoded labels of the whole training set, or its standardised
        regression targets.
    rows : ndarray of int
        The node's rows of ``X``.
    E : ndarray of shape (len(rows), embedding_dim)
        The node's embeddings, from ``net``.
    net : skorch net
        The node's network (embedder, and start point of fine-tuned experts).
    n_classes : int
        Columns of the tree's output: classes, or regression targets.
    expert : "finetune", "residual", "lora", "head" or a scikit-learn classifier
        (a regressor for regression)
    expert_epochs : int
    expert_rank : int
        Rank of LoRA experts' adapters.
    expert_kl : float
        Weight of a network expert's KL penalty toward its parent's
        predictions (0: none).
    head_params : dict
        ``lr``, ``batch_size``, ``optimizer``, ``device`` and the recipe's
        ``validation_fraction``, ``patience``, ``lr_schedule`` for heads.
    name : str
        Where in the tree the node is, for messages.
    overlap : float
        Share of a cluster's size its expert also takes from other clusters
        (the points closest to it).
    outside_share : float
        Share of the other clusters' points an expert also takes at random.
    search_expert : {"same", "head"}
        ``"head"`` scores the candidates with linear heads on ``E`` instead of
        ``expert``.
    w : ndarray of shape (n_samples,) or None
        Positive weight of every training row (aligned with ``X`` and ``y``),
        or ``None`` for an unweighted fit. Experts train on weighted losses,
        clusterers whose ``fit`` takes ``sample_weight`` get it, candidates
        score weighted held-out accuracy and the split test counts weighted
        wins and losses.
    pretrained : dict
        Pretrained clusterer states (DEC autoencoders) and fitted reducers,
        keyed by fit rows. :func:`search_node` fills it in this process
        before it hands the candidates out, so every worker receives them.
    row_correct : dict
        Per held-out row, whether a candidate classified it correctly (for
        regression: minus its squared error), keyed by ``(candidate,
        held-out rows)``: written by :meth:`NodeExpertsClassifier.score` and
        collected at once by the search task that scored (in the worker's
        copy of the context, when the task runs in another process).
    regression : bool
        The tree is a regressor: ``y`` holds real targets, experts predict
        them, and candidates are scored by ``scoring``.
    scoring : {"r2", "neg_mean_squared_error", "neg_mean_absolute_error"}
        A regressor's held-out score of every candidate, and its per-row
        outcome (see :data:`REGRESSION_SCORINGS`). Unused by a classifier.

    What the search fits (routers, experts, held-out outcomes) is not kept
    here: every search task returns it (see :func:`search_node`), so it
    reaches the calling process whatever the joblib backend, and nothing is
    trained twice.
    """

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    E: np.ndarray
    net: object
    n_classes: int
    expert: object = "finetune"
    expert_epochs: int = 5
    expert_rank: int = 4
    expert_kl: float = 0.0
    head_params: dict = field(default_factory=dict)
    name: str = "node"
    overlap: float = 0.0
    outside_share: float = 0.0
    search_expert: str = "same"
    w: np.ndarray | None = None
    pretrained: dict = field(default_factory=dict)
    row_correct: dict = field(default_factory=dict)
    regression: bool = False
    scoring: str = "r2"

    def __deepcopy__(self, memo):
        return self

    def expert_positions(self, labels, proba, cluster, seed):
        """Positions cluster ``cluster``'s expert trains on (see
        :func:`overlap_positions`)."""
        return overlap_positions(
            labels, proba, cluster, self.overlap, self.outside_share, seed
        )

    def train_expert(self, positions, seed, stage, kind=None, log=None):
        """Train one expert on the node rows at ``positions``.

        ``kind`` overrides ``expert`` (the search's ``"head"`` candidates).
        ``log``, a list, receives the expert's
        :class:`~hemoe_sk.tree.TrainingRecord` (``stage``, the number of
        rows, the epochs it ran).
        """
        expert, epochs = self._fit_expert(positions, seed, stage, kind)
        if log is not None:
            log.append(TrainingRecord(stage, len(positions), epochs))
        return expert

    def _fit_expert(self, positions, seed, stage, kind):
        """:meth:`train_expert`'s work; returns ``(expert, epochs run)``."""
        kind = self.expert if kind is None else kind
        rows = self.rows[positions]
        labels = None if self.regression else np.unique(self.y[rows])
        if labels is not None and len(labels) == 1:
            return ConstantExpert(labels[0], self.n_classes), 0
        if isinstance(kind, str) and kind in NET_EXPERTS:
            net = (
                copy.deepcopy(self.net)
                if kind == "finetune" and not self.expert_kl
                else make_expert_net(
                    self.net, kind, rank=self.expert_rank, kl_weight=self.expert_kl,
                    random_state=seed,
                )
            )
            before = epochs_run(net)
            train_net(
                net,
                RowSubset(self.X, self.y, rows, weight=self.w),
                seed=seed,
                stage=stage,
                partial=True,
                max_epochs=self.expert_epochs,
            )
            return NetExpert(net), epochs_run(net) - before
        E = self.E[positions]
        if isinstance(kind, str) and kind == "head":
            make_net = make_regressor_net if self.regression else make_classifier_net
            outputs = {"n_outputs" if self.regression else "n_classes": self.n_classes}
            head = make_net(
                LinearHead, n_features=E.shape[1], max_epochs=self.expert_epochs,
                **outputs, **self.head_params,
            )
            if self.w is None:
                train_net(head, E, self.y[rows], seed=seed, stage=stage)
            else:
                train_net(
                    head,
                    RowSubset(E, self.y[rows], np.arange(len(rows)), weight=self.w[rows]),
                    seed=seed,
                    stage=stage,
                )
            return HeadExpert(head), epochs_run(head)
        estimator = clone(kind)
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=seed)
        y = self.y[rows]
        if y.ndim == 2 and y.shape[1] == 1:  # a single regression target
            y = y.ravel()
        if self.w is None:
            estimator.fit(E, y)
        elif has_fit_parameter(estimator, "sample_weight"):
            estimator.fit(E, y, sample_weight=self.w[rows])
        else:
            raise ValueError(
                f"{stage}: the expert {type(estimator).__name__} does not take "
                "sample_weight in fit, so it cannot train on weighted rows; pass "
                "an expert whose fit does, or fit without sample_weight and "
                "class_weight."
            )
        return SklearnExpert(estimator, self.n_classes), 0


#: The scorings of a regressor's K search, each with the name its scores
#: have in ``export_text``. Every one is computed on the standardised
#: targets (so ``-MSE`` is the mean squared error divided by the target's
#: variance) and averaged over the targets. The per-row outcome the paired
#: split test reads is minus the row's squared error (``"r2"`` and
#: ``"neg_mean_squared_error"``, which rank candidates alike on the same
#: rows) or minus its absolute error (``"neg_mean_absolute_error"``), summed
#: over the targets.
REGRESSION_SCORINGS = {
    "r2": "R^2",
    "neg_mean_squared_error": "-MSE",
    "neg_mean_absolute_error": "-MAE",
}


def regression_outcomes(pred, y, scoring="r2"):
    """Per row, minus its squared (or, for ``"neg_mean_absolute_error"``,
    absolute) error summed over the targets: higher is better.

    Examples
    --------
    >>> import numpy as np
    >>> pred, y = np.array([[1.0], [2.0]]), np.array([[0.0], [4.0]])
    >>> regression_outcomes(pred, y).tolist()
    [-1.0, -4.0]
    >>> regression_outcomes(pred, y, "neg_mean_absolute_error").tolist()
    [-1.0, -2.0]
    """
    err = pred - np.asarray(y).reshape(pred.shape)
    if scoring == "neg_mean_absolute_error":
        return -np.abs(err).sum(axis=1)
    return -(err**2).sum(axis=1)


def regression_score(y, pred, scoring="r2", sample_weight=None):
    """The held-out score ``scoring`` names, averaged over the targets.

    Examples
    --------
    >>> import numpy as np
    >>> y, pred = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 4.0])
    >>> regression_score(y, pred, "neg_mean_absolute_error")
    -0.6666666666666666
    """
    if scoring == "r2":
        return float(r2_score(y, pred, sample_weight=sample_weight))
    metric = (
        mean_absolute_error if scoring == "neg_mean_absolute_error"
        else mean_squared_error
    )
    return -float(metric(y, pred, sample_weight=sample_weight))


def _rows_key(positions):
    """A key naming a set of node positions, the same in every process.

    Python's ``hash`` of bytes is salted per process (``PYTHONHASHSEED``), so
    a key built from it in the calling process would never match one built
    in a loky, Dask or Ray worker: the pretrained clusterers and reducers
    that :func:`search_node` hands out would be missed there and fitted again.
    """
    positions = np.ascontiguousarray(positions, dtype=np.intp)
    digest = hashlib.blake2b(positions.tobytes(), digest_size=16).hexdigest()
    return (len(positions), digest)


class NodeExpertsClassifier(ClassifierMixin, BaseEstimator):
    """Cluster a node's embeddings, then train one expert per cluster.

    This is the candidate that :func:`search_node` scores. Its inputs are
    *positions* into the node held by ``context`` (one integer column), not
    features.

    Parameters
    ----------
    n_clusters : int or None, default=2
        Number of clusters; 1 is the unsplit node (a single expert). ``None``
        leaves the number to the clusterer (HDBSCAN and other routers that
        find K themselves), configured by ``clusterer_params``.
    clusterer_params : dict or None, default=None
        Parameters set on the clusterer (one point of a general grid).
    clusterer : estimator, default=None
        Clusterer with ``fit``/``predict``, cloned for every fit. ``None``
        uses ``KMeans``.
    reducer : transformer or None, default=None
        Fitted on the embeddings before the clusterer (e.g. ``PCA``).
    min_cluster_size : int, default=1
        A candidate whose smallest cluster (on the rows it is fit on) is
        smaller, or that finds a single cluster, is not eligible: it trains no
        experts and scores NaN.
    context : NodeContext
        The node's shared data.
    random_state : int, default=0
        Seed of the reducer, the clusterer and the experts.

    Attributes
    ----------
    router_ : Router or None
    experts_ : list
        One expert per cluster.
    training_ : list of TrainingRecord
        What each expert trained on, aligned with ``experts_``.
    cluster_sizes_ : ndarray of shape (n_clusters,)
    eligible_ : bool
    """

    def __init__(
        self,
        n_clusters=2,
        *,
        clusterer_params=None,
        clusterer=None,
        reducer=None,
        min_cluster_size=1,
        context=None,
        random_state=0,
    ):
        self.n_clusters = n_clusters
        self.clusterer_params = clusterer_params
        self.clusterer = clusterer
        self.reducer = reducer
        self.min_cluster_size = min_cluster_size
        self.context = context
        self.random_state = random_state

    def _positions(self, P):
        return np.asarray(P, dtype=np.intp).reshape(-1)

    @property
    def candidate_key(self):
        """What identifies this candidate in the context's caches."""
        return (self.n_clusters, repr(self.clusterer_params))

    def _seeded(self, estimator):
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=self.random_state)
        return estimator

    def _make_clusterer(self):
        base = KMeans(n_init=3) if self.clusterer is None else self.clusterer
        clusterer = self._seeded(clone(base))
        if self.clusterer_params:
            clusterer.set_params(**self.clusterer_params)
        if self.n_clusters is not None:
            clusterer.set_params(n_clusters=self.n_clusters)
        return clusterer

    def _reduced(self, positions):
        """Embeddings of ``positions`` after the (cached) fitted reducer."""
        ctx = self.context
        E = ctx.E[positions]
        if self.reducer is None:
            return None, E
        key = ("reducer", _rows_key(positions))
        if key not in ctx.pretrained:
            ctx.pretrained[key] = self._seeded(clone(self.reducer)).fit(E)
        reducer = ctx.pretrained[key]
        return reducer, reducer.transform(E)

    def fit_router(self, P):
        """Fit the router on the rows ``P``.

        Deterministic in ``random_state``: the same candidate fitted on the
        same rows gives the same router, in any process. Returns
        ``(router, labels)``.
        """
        ctx = self.context
        positions = self._positions(P)
        if self.n_clusters == 1:
            return None, np.zeros(len(positions), dtype=np.intp)
        reducer, Z = self._reduced(positions)
        clusterer = self._make_clusterer()
        pretrained = ctx.pretrained.get(_rows_key(positions))
        # Row weights reach clusterers whose fit takes them (KMeans).
        weighted = {}
        if ctx.w is not None and has_fit_parameter(clusterer, "sample_weight"):
            weighted["sample_weight"] = ctx.w[ctx.rows[positions]]
        if pretrained is not None:
            clusterer.fit(Z, autoencoder=pretrained, **weighted)
        elif has_fit_parameter(clusterer, "y"):
            # Labels reach clusterers that take them (class-group and
            # within-class signals; scikit-learn's ignore ``y``).
            clusterer.fit(Z, ctx.y[ctx.rows[positions]], **weighted)
        else:
            clusterer.fit(Z, **weighted)
        labels = hard_assign(clusterer, Z)
        k = self.n_clusters or getattr(clusterer, "n_clusters_", None)
        k = int(k) if k else int(labels.max()) + 1
        return Router(clusterer, reducer, k), labels

    def fit(self, P, y=None):
        ctx = self.context
        positions = self._positions(P)
        self.router_, labels = self.fit_router(positions)
        k = 1 if self.router_ is None else self.router_.n_clusters
        self.cluster_sizes_ = np.bincount(labels, minlength=k)
        self.eligible_ = bool(
            (self.n_clusters == 1 or k > 1)
            and self.cluster_sizes_.min() >= self.min_cluster_size
        )
        self.experts_ = []
        self.training_ = []
        self.classes_ = np.arange(ctx.n_classes)
        if not self.eligible_:
            return self
        proba = (
            self.router_.predict_proba(ctx.E[positions])
            if self.router_ is not None and ctx.overlap > 0
            else None
        )
        kind = "head" if ctx.search_expert == "head" else None
        for c in range(k):
            self.experts_.append(
                ctx.train_expert(
                    positions[ctx.expert_positions(labels, proba, c, self.random_state + c)],
                    seed=self.random_state + 1 + c,
                    stage=f"{ctx.name}, K={k} search, expert {c}",
                    kind=kind,
                    log=self.training_,
                )
            )
        return self

    def predict_proba(self, P):
        ctx = self.context
        positions = self._positions(P)
        E = ctx.E[positions]
        labels = (
            np.zeros(len(positions), dtype=np.intp)
            if self.router_ is None
            else self.router_.predict(E)
        )
        return routed_outputs(
            self.experts_, labels, ctx.X, ctx.rows[positions], E, ctx.n_classes
        )

    def predict(self, P):
        out = self.predict_proba(P)
        return out if self.context.regression else out.argmax(axis=1)

    def score(self, P, y, sample_weight=None):
        """Weighted accuracy: sum over clusters of (n_c / N) * acc_c; for
        regression, the context's ``scoring`` (:func:`regression_score`:
        R^2, -MSE or -MAE, averaged over the standardised targets).

        With hard routing this equals the accuracy of the routed experts. An
        ineligible candidate scores NaN, which the search ranks last. Rows
        weigh their ``sample_weight``, else the context's row weights (each
        row 1 in an unweighted fit).
        """
        if not self.eligible_:
            return np.nan
        positions = self._positions(P)
        key = (self.candidate_key, _rows_key(positions))
        if sample_weight is None and self.context.w is not None:
            sample_weight = self.context.w[self.context.rows[positions]]
        if self.context.regression:
            pred = self.predict(P)
            scoring = self.context.scoring
            self.context.row_correct[key] = regression_outcomes(pred, y, scoring)
            return regression_score(y, pred, scoring, sample_weight)
        correct = self.predict(P) == np.asarray(y)
        self.context.row_correct[key] = correct
        if sample_weight is None:
            return float(np.mean(correct))
        return float(np.average(correct, weights=sample_weight))


# --------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------


def node_splits(y, validation_size, cv, seed):
    """The node's train/validation split(s), stratified when possible."""
    X_dummy = np.zeros((len(y), 1))
    if cv is None:
        strat = StratifiedShuffleSplit(
            n_splits=1, test_size=validation_size, random_state=seed
        )
        plain = ShuffleSplit(n_splits=1, test_size=validation_size, random_state=seed)
        needed = 2
    elif isinstance(cv, numbers.Integral):
        strat = StratifiedKFold(int(cv), shuffle=True, random_state=seed)
        plain = KFold(int(cv), shuffle=True, random_state=seed)
        needed = int(cv)
    else:
        return list(cv.split(X_dummy, y))
    if np.asarray(y).dtype.kind not in "iu":  # regression targets
        return list(plain.split(X_dummy, y))
    counts = np.bincount(y)
    if counts[counts > 0].min() >= needed:
        try:
            return list(strat.split(X_dummy, y))
        except ValueError:  # e.g. fewer test rows than classes
            pass
    return list(plain.split(X_dummy, y))


#: Paired tests a split must pass against the unsplit node (see
#: :func:`decide_split`).
SPLIT_TESTS = ("bootstrap", "mcnemar", "margin", "none")


@dataclass
class SplitDecision:
    """Whether a node's best split beats the unsplit node on held-out rows.

    Attributes
    ----------
    keep : bool
    gain : float
        Held-out accuracy of the split minus that of the unsplit node (for
        real-valued outcomes: the mean paired difference, e.g. the mean
        reduction of squared error).
    p_value : float or None
        One-sided p-value of the paired test (``None`` for ``"margin"``).
    min_gain : float
        The margin the gain had to exceed.
    test : str
    n : int or float
        Held-out rows compared (their summed weight in a weighted test).
    wins, losses : int or float
        Rows only the split (wins) or only the unsplit node (losses) got
        right (summed weights in a weighted test; real-valued outcomes: rows
        where the split did better, or worse).
    """

    keep: bool
    gain: float
    p_value: float | None
    min_gain: float
    test: str
    n: int | float
    wins: int | float
    losses: int | float


def decide_split(
    correct_split,
    correct_unsplit,
    *,
    test="bootstrap",
    alpha=0.05,
    min_gain="auto",
    n_resamples=4000,
    random_state=0,
    sample_weight=None,
):
    """Decide from paired held-out outcomes whether a split is kept.

    Parameters
    ----------
    correct_split, correct_unsplit : array-like of shape (n,)
        Per held-out row, whether the split (its routed experts) and the
        unsplit node classified it correctly (bool, or integer 0/1). The same
        rows, in one order. Floating-point outcomes are real-valued scores,
        higher is better (a regressor's minus squared error): the gain is
        then the mean paired difference, the bootstrap resamples those
        differences, ``"auto"`` margin is the standard error of the unsplit
        outcomes' mean, and ``"mcnemar"`` (a test of counts) is an error.
    test : {"bootstrap", "mcnemar", "margin", "none"}, default="bootstrap"
        ``"bootstrap"``: the rows are resampled with replacement
        ``n_resamples`` times; the p-value is the share of resamples in which
        the split does not gain (the paired differences take the values -1,
        0 and 1, so the resampling is drawn exactly, as multinomial counts).
        ``"mcnemar"``: the exact one-sided McNemar test, a binomial test of
        the rows only the split got right against those only the unsplit
        node got right. ``"margin"``: no test; the gain must exceed
        ``min_gain`` (0.1's rule). ``"none"``: the split is always kept (to
        grow a tree whatever it scores: demonstrations, forced hierarchies).
    alpha : float, default=0.05
        Significance level of the tests.
    min_gain : "auto" or float, default="auto"
        The gain must also exceed this. ``"auto"`` is one standard error of
        the unsplit accuracy, ``sqrt(a (1 - a) / n)``, for ``"margin"``, and 0
        for the tests (which already account for the noise).
    n_resamples : int, default=4000
    random_state : int, default=0
        Seeds the bootstrap.
    sample_weight : array-like of shape (n,), default=None
        Non-negative weight of every row. The weights count as frequencies:
        ``n``, the wins and the losses are sums of weights, so an integer
        weight equals repeating the row. The bootstrap draws ``round(n)``
        rows with probabilities proportional to the weights; McNemar's
        binomial tail is evaluated at the weighted counts through the
        regularised incomplete beta function (exact for integer weights).
        With real-valued outcomes the gain is the weighted mean difference
        and ``"auto"``'s standard error uses the weighted standard deviation
        (both exactly those of the repeated rows for integer weights).
        ``None`` counts every row once.

    Returns
    -------
    SplitDecision

    Examples
    --------
    >>> import numpy as np
    >>> unsplit = np.r_[np.ones(80), np.zeros(20)].astype(bool)
    >>> split = unsplit.copy(); split[80:95] = True   # 15 more rows right
    >>> decide_split(split, unsplit, test="mcnemar").keep
    True
    >>> decide_split(unsplit, unsplit).keep
    False

    Integer weights count as repeated rows:

    >>> w = np.r_[np.ones(90), 2 * np.ones(10)]
    >>> d = decide_split(split, unsplit, test="mcnemar", sample_weight=w)
    >>> r = decide_split(np.repeat(split, w.astype(int)),
    ...                  np.repeat(unsplit, w.astype(int)), test="mcnemar")
    >>> d.wins, d.n, bool(np.isclose(d.p_value, r.p_value))
    (20.0, 110.0, True)
    """
    a = np.asarray(correct_split).ravel()
    b = np.asarray(correct_unsplit).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"decide_split needs paired outcomes: got {a.shape[0]} and "
            f"{b.shape[0]} rows."
        )
    if test not in SPLIT_TESTS:
        raise ValueError(f"test must be one of {SPLIT_TESTS}, got {test!r}.")
    w = None if sample_weight is None else _pair_weights(sample_weight, len(a))
    if len(a) and (a.dtype.kind == "f" or b.dtype.kind == "f"):
        return _decide_real(a.astype(float), b.astype(float), test, alpha, min_gain,
                            n_resamples, random_state, w)
    a, b = a.astype(bool), b.astype(bool)
    if w is not None:
        return _decide_split_weighted(
            a, b, w, test=test, alpha=alpha, min_gain=min_gain,
            n_resamples=n_resamples, random_state=random_state,
        )
    n = len(a)
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if n == 0:
        return SplitDecision(test == "none", 0.0, None, 0.0, test, 0, 0, 0)
    gain = (wins - losses) / n
    if min_gain == "auto":
        acc = float(b.mean())
        margin = math.sqrt(acc * (1.0 - acc) / n) if test == "margin" else 0.0
    else:
        margin = float(min_gain)
    p_value = None
    if test == "mcnemar":
        from scipy.stats import binom

        m = wins + losses
        p_value = float(binom.sf(wins - 1, m, 0.5)) if m else 1.0
    elif test == "bootstrap":
        rng = np.random.default_rng(random_state)
        counts = rng.multinomial(n, [wins / n, losses / n, (n - wins - losses) / n],
                                 size=n_resamples)
        not_better = np.count_nonzero(counts[:, 0] <= counts[:, 1])
        p_value = (1 + not_better) / (n_resamples + 1)
    keep = test == "none" or (gain > margin and (p_value is None or p_value < alpha))
    return SplitDecision(bool(keep), float(gain), p_value, float(margin), test, n,
                         wins, losses)


def _pair_weights(sample_weight, n):
    w = np.asarray(sample_weight, dtype=float).ravel()
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(
            f"sample_weight must hold {n} finite non-negative numbers, one per "
            "paired outcome."
        )
    return w


def _decide_real(a, b, test, alpha, min_gain, n_resamples, random_state, w=None):
    """:func:`decide_split` for real-valued paired outcomes (frequency
    weights ``w``: the weighted mean gain and standard error, a bootstrap of
    ``round(sum(w))`` rows drawn with probabilities proportional to ``w``)."""
    if test == "mcnemar":
        raise ValueError(
            "split_test='mcnemar' compares counts of rows classified correctly; "
            "a regressor's held-out outcomes are real-valued (minus squared "
            "errors): use 'bootstrap', 'margin' or 'none'."
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("decide_split got NaN or inf held-out outcomes.")
    d = a - b
    if w is None:
        n = len(a)
        gain, spread = float(d.mean()), float(b.std())
        wins, losses = int(np.sum(d > 0)), int(np.sum(d < 0))
    else:
        n = float(w.sum())
        if n == 0:
            return SplitDecision(test == "none", 0.0, None, 0.0, test, 0.0, 0.0, 0.0)
        gain = float(np.average(d, weights=w))
        spread = math.sqrt(float(np.average((b - np.average(b, weights=w)) ** 2,
                                            weights=w)))
        wins, losses = float(w[d > 0].sum()), float(w[d < 0].sum())
    if min_gain == "auto":
        margin = spread / math.sqrt(n) if test == "margin" else 0.0
    else:
        margin = float(min_gain)
    p_value = None
    if test == "bootstrap":
        rng = np.random.default_rng(random_state)
        draws = len(d) if w is None else max(1, int(round(n)))
        means = np.empty(n_resamples)
        for start in range(0, n_resamples, 500):  # bounded memory
            size = (min(start + 500, n_resamples) - start, draws)
            picked = (
                rng.integers(0, len(d), size=size) if w is None
                else rng.choice(len(d), size=size, p=w / n)
            )
            means[start:start + size[0]] = d[picked].mean(1)
        p_value = (1 + np.count_nonzero(means <= 0)) / (n_resamples + 1)
    keep = test == "none" or (gain > margin and (p_value is None or p_value < alpha))
    return SplitDecision(bool(keep), gain, p_value, margin, test, n, wins, losses)


def _decide_split_weighted(a, b, w, *, test, alpha, min_gain, n_resamples,
                           random_state):
    """:func:`decide_split` with frequency weights ``w`` (see there)."""
    n = float(w.sum())
    wins, losses = float(w[a & ~b].sum()), float(w[~a & b].sum())
    if n == 0:
        return SplitDecision(test == "none", 0.0, None, 0.0, test, 0.0, 0.0, 0.0)
    gain = (wins - losses) / n
    if min_gain == "auto":
        acc = float(w[b].sum()) / n
        margin = math.sqrt(acc * (1.0 - acc) / n) if test == "margin" else 0.0
    else:
        margin = float(min_gain)
    p_value = None
    if test == "mcnemar":
        from scipy.special import betainc

        # P(Binomial(m, 1/2) >= wins) = I_{1/2}(wins, m - wins + 1).
        p_value = float(betainc(wins, losses + 1.0, 0.5)) if wins > 0 else 1.0
    elif test == "bootstrap":
        rng = np.random.default_rng(random_state)
        draws = max(1, int(round(n)))
        counts = rng.multinomial(
            draws, [wins / n, losses / n, max(0.0, 1.0 - (wins + losses) / n)],
            size=n_resamples,
        )
        not_better = np.count_nonzero(counts[:, 0] <= counts[:, 1])
        p_value = (1 + not_better) / (n_resamples + 1)
    keep = test == "none" or (gain > margin and (p_value is None or p_value < alpha))
    return SplitDecision(bool(keep), float(gain), p_value, float(margin), test, n,
                         wins, losses)


@dataclass
class NodeSearchResult:
    """What :func:`search_node` found for one node.

    ``labels`` routes all of the node's rows through ``router``; ``scores``
    maps a readable candidate name (``"K=3"``, ``"min_cluster_size=10"``) to
    its held-out weighted accuracy. ``decision`` says whether the best
    candidate beat the unsplit node (``None`` when no split was eligible).
    ``experts`` are the chosen candidate's experts as trained in the search
    (on the first split's fit rows), when ``search_node`` was asked for them,
    and ``training`` what each of them trained on
    (:class:`~hemoe_sk.tree.TrainingRecord`).
    """

    router: object
    labels: np.ndarray
    scores: dict
    cv_results: dict
    min_gain: float = 0.0
    decision: SplitDecision | None = None
    experts: list | None = None
    training: list | None = None

    @property
    def n_clusters(self):
        return 1 if self.router is None else self.router.n_clusters


def _candidate_name(params):
    if params.get("n_clusters") is not None:
        return f"K={params['n_clusters']}"
    if not params["clusterer_params"]:
        return "K found by the clusterer"
    return ", ".join(f"{k}={v}" for k, v in sorted(params["clusterer_params"].items()))


def _fit_and_score(candidate, params, train, test, y_node, *, keep_router,
                   keep_experts):
    """One task of the search: fit the candidate ``params`` on the node
    positions ``train`` and score it on ``test``.

    It runs wherever the joblib backend puts it (this process, a thread, a
    loky, Dask or Ray worker) and returns all the caller needs: the held-out
    score, the per-row outcomes (for :func:`decide_split`), the fit and score
    times, and, when asked, the fitted router and experts. A worker's
    objects are pickled back with the result, so the caller never fits a
    candidate again.
    """
    est = clone(candidate).set_params(**clone(params, safe=False))
    start = time.perf_counter()
    est.fit(train.reshape(-1, 1), y_node[train])
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    score = est.score(test.reshape(-1, 1), y_node[test])
    score_time = time.perf_counter() - start
    # ``score`` left the outcomes in this process's copy of the context.
    correct = est.context.row_correct.pop((est.candidate_key, _rows_key(test)), None)
    return {
        "score": float(score),
        "correct": correct,
        "fit_time": fit_time,
        "score_time": score_time,
        "router": est.router_ if keep_router else None,
        "experts": est.experts_ if keep_experts else None,
        "training": est.training_ if keep_experts else None,
    }


def _param_arrays(candidate_params):
    """``param_<name>`` masked arrays, as in ``GridSearchCV.cv_results_``."""
    names = list(dict.fromkeys(name for p in candidate_params for name in p))
    arrays = {}
    for name in names:
        values = [p[name] for p in candidate_params if name in p]
        try:
            arr = np.array(values)
        except ValueError:  # e.g. sequences of different lengths
            dtype = np.dtype(object)
        else:
            dtype = arr.dtype if arr.dtype.kind != "U" and arr.ndim == 1 else object
        masked = np.ma.MaskedArray(np.empty(len(candidate_params), dtype=dtype),
                                   mask=True)
        for i, p in enumerate(candidate_params):
            if name in p:
                masked[i] = p[name]
        arrays[f"param_{name}"] = masked
    return arrays


def _cv_results(candidate_params, out, n_splits):
    """A ``GridSearchCV.cv_results_`` dict (same keys, same statistics) from
    the tasks' results, ordered candidate by candidate, split by split."""
    n = len(candidate_params)
    results = {}

    def store(key, values, splits=False, rank=False):
        array = np.array(values, dtype=np.float64).reshape(n, n_splits)
        if splits:
            for s in range(n_splits):
                results[f"split{s}_{key}"] = array[:, s]
        means = np.average(array, axis=1)
        results[f"mean_{key}"] = means
        results[f"std_{key}"] = np.sqrt(
            np.average((array - means[:, np.newaxis]) ** 2, axis=1)
        )
        if rank:
            # NaN (ineligible candidates) ties with the worst, as in sklearn.
            if np.isnan(means).all():
                ranks = np.ones(n, dtype=np.int32)
            else:
                filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
                ranks = rankdata(-filled, method="min").astype(np.int32)
            results[f"rank_{key}"] = ranks

    store("fit_time", [o["fit_time"] for o in out])
    store("score_time", [o["score_time"] for o in out])
    results.update(_param_arrays(candidate_params))
    results["params"] = candidate_params
    store("test_score", [o["score"] for o in out], splits=True, rank=True)
    return results


def search_node(
    context,
    *,
    n_clusters_grid,
    clusterer,
    min_cluster_size,
    validation_size,
    cv,
    seed,
    cluster_param_grid=None,
    reducer=None,
    min_gain="auto",
    split_test="bootstrap",
    split_alpha=0.05,
    splits=None,
    return_experts=False,
    n_jobs=None,
):
    """Choose the node's partition by held-out weighted accuracy.

    Every candidate is a :class:`NodeExpertsClassifier` over the node's
    positions: K=1 (the unsplit node), and either every K in
    ``n_clusters_grid`` whose clusters can meet ``min_cluster_size``, or every
    point of ``cluster_param_grid`` (for routers that find K themselves). The
    best candidate by mean held-out accuracy is then compared with K=1 on the
    same held-out rows by :func:`decide_split` (``split_test``,
    ``split_alpha``, ``min_gain``), and kept only if it passes. The returned
    router is the one that was scored (on the first split's fit rows), not a
    new draw.

    ``splits`` (a list of ``(fit positions, held-out positions)``) replaces
    the node's own ``validation_size``/``cv`` split; the classifier's
    held-out selection passes the part of its tree-wide split that reached
    the node. With ``return_experts=True`` the chosen candidate's experts,
    trained on the first split's fit rows in the search, are returned too.

    The search is the loop of :class:`~sklearn.model_selection.GridSearchCV`
    (every candidate on every split, in that order, with the same
    ``cv_results_`` keys), run through :class:`sklearn.utils.parallel.Parallel`
    with ``n_jobs``, so any joblib backend runs it (threads, loky processes,
    Dask, Ray: see ``joblib.parallel_config``). Unlike ``GridSearchCV``, every
    task returns what it fitted: the first split's tasks return their router
    and (with ``return_experts``) their experts, every task its per-row
    held-out outcomes. Nothing is fitted again in this process, whichever
    backend ran the tasks, and the result is the same as with ``n_jobs=1``.

    What travels to a worker process, per batch of tasks: the candidate,
    whose :class:`NodeContext` carries the whole training matrix ``X``, the
    labels, the node's embeddings ``E``, the node's network and the
    pretrained clusterer states and reducers (fitted here, before the tasks
    are handed out); plus the split's positions. The loky backend memory-maps
    the arrays over 1 MB instead of copying them; Dask and Ray pickle them
    with the task. What comes back: scores, boolean outcomes, times, and the
    first split's routers and experts (each network expert a fine-tuned copy
    of the node's network).

    Returns
    -------
    NodeSearchResult
    """
    y_node = context.y[context.rows]
    n = len(context.rows)
    if splits is None:
        splits = node_splits(y_node, validation_size, cv, seed)
    n_fit = min(len(train) for train, _ in splits)
    min_fit = max(1, math.ceil(min_cluster_size * n_fit / n))
    if cluster_param_grid:
        grid = [
            {"n_clusters": [1]},
            {
                "n_clusters": [None],
                "clusterer_params": list(ParameterGrid(cluster_param_grid)),
            },
        ]
    else:
        ks = sorted({int(k) for k in n_clusters_grid if k * min_fit <= n_fit})
        grid = [{"n_clusters": [1, *ks]}]

    candidate = NodeExpertsClassifier(
        clusterer=clusterer,
        reducer=reducer,
        min_cluster_size=min_fit,
        context=context,
        random_state=seed,
    )
    candidate_params = list(ParameterGrid(grid))
    if len(candidate_params) > 1:
        # Fit the reducer and pretrain the clusterer (DEC's autoencoder) once
        # per fit set, here, so that every candidate (in any process) shares
        # them.
        for train, _ in splits:
            _, Z = candidate._reduced(train)
            if hasattr(clusterer, "pretrain"):
                pre = candidate._seeded(clone(clusterer))
                pre.pretrain(Z)
                context.pretrained[_rows_key(train)] = pre.autoencoder_

    n_splits = len(splits)
    out = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score)(
            candidate, params, train, test, y_node,
            keep_router=s == 0, keep_experts=return_experts and s == 0,
        )
        for params in candidate_params
        for s, (train, test) in enumerate(splits)
    )
    context.pretrained.clear()
    context.row_correct.clear()
    results = _cv_results(candidate_params, out, n_splits)
    mean = results["mean_test_score"]
    scores = {_candidate_name(p): m for p, m in zip(candidate_params, mean)}

    def held_out_correct(i):
        return np.concatenate([out[i * n_splits + s]["correct"] for s in range(n_splits)])

    unsplit = next(i for i, p in enumerate(candidate_params) if p["n_clusters"] == 1)
    best = unsplit
    for i in range(len(mean)):
        if np.isfinite(mean[i]) and mean[i] > mean[best]:
            best = i
    decision = None
    if len(mean) > 1 and np.isfinite(mean).sum() > 1:
        challenger = best if best != unsplit else max(
            (i for i in range(len(mean)) if i != unsplit and np.isfinite(mean[i])),
            key=lambda i: mean[i],
        )
        decision = decide_split(
            held_out_correct(challenger),
            held_out_correct(unsplit),
            test=split_test,
            alpha=split_alpha,
            min_gain=min_gain,
            random_state=seed,
            sample_weight=None if context.w is None else np.concatenate(
                [context.w[context.rows[test]] for _, test in splits]
            ),
        )
        if split_test == "none":
            best = challenger
        elif best != unsplit and not decision.keep:
            best = unsplit
    router = None
    experts = training = None
    labels = np.zeros(n, dtype=np.intp)
    if best != unsplit:
        # The first split's task of the chosen candidate: its router and
        # experts, as scored.
        router = out[best * n_splits]["router"]
        labels = router.predict(context.E)
        if return_experts:
            experts = out[best * n_splits]["experts"]
            training = out[best * n_splits]["training"]
    return NodeSearchResult(
        router,
        labels,
        scores,
        results,
        0.0 if decision is None else decision.min_gain,
        decision,
        experts,
        training,
    )
