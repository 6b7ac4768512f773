"""Split signals: clusterers that do not just rediscover the classes.

A node of the hierarchical classifier is split by clustering its network's
penultimate-layer embeddings. A trained network's last hidden layer collapses
onto the classes, so plain k-means there mostly rediscovers the classes, and
an expert given a one-class cluster has nothing to learn. The three
clusterers here take the split signal from elsewhere:

* :class:`BalancedKMeans` -- k-means whose training assignment gives every
  cluster the same number of rows (no tiny or empty cluster, no expert
  without data).
* :class:`ClassGroupClusterer` -- groups of mutually *confused classes*, read
  from the soft confusion matrix of a linear softmax head (HD-CNN, Yan et
  al. 2015; Hinton et al. 2015's specialists).
* :class:`WithinClassClusterer` -- *sub-populations within classes* found by
  k-means per class and grouped across classes (after GEORGE, Sohoni et al.
  2020), so that an expert sees parts of several classes.

All three take the node's class labels ``y`` in :meth:`fit` and route new
points without labels (``predict``, ``predict_proba``). Read more in the
:doc:`user guide </signals>`.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.cluster import KMeans, SpectralClustering, kmeans_plusplus
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from .._docstrings import fill_doc
from .kernels import squared_distances as _sq_distances
from .routing import RouterMixin

__all__ = ["BalancedKMeans", "ClassGroupClusterer", "WithinClassClusterer"]

_MAX_SEED = np.iinfo(np.int32).max

#: Constraints of the parameters the three clusterers share.
_SHARED_CONSTRAINTS: dict = {
    "n_clusters": [Interval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
}


def _student_t(X, centers):
    """Student-t kernel ``1 / (1 + d^2)`` to every centre (not normalised):
    :mod:`hemoe_sk.cluster.kernels` with ``alpha=1``.

    The kernel of :func:`hemoe_sk.cluster.routing.soft_assign` for routers
    with ``cluster_centers_``, so soft routing agrees with it.
    """
    return 1.0 / (1.0 + _sq_distances(X, centers))


class _ClassLabelsMixin(RouterMixin):
    """``fit(X, y)`` of a clusterer that reads the node's class labels.

    The class implements ``_fit(X, y)`` on validated ``X`` and ``y`` (``y``
    None when no labels were given) and routes new points without labels
    (:class:`~hemoe_sk.cluster.routing.RouterMixin`).
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit on a node's embeddings and the class of each row.

        See the class description for what is fitted; new points are then
        routed without labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows (a node's embeddings); float32 is accepted.

        y : array-like of shape (n_samples,), default=None
            Class of each row (any labels). ``None``: see the class's Notes.

        Returns
        -------
        self : object
            Fitted clusterer.
        """
        dtype = [np.float64, np.float32]
        if y is None:
            return self._fit(validate_data(self, X, dtype=dtype), None)
        X, y = validate_data(self, X, y, dtype=dtype)
        check_classification_targets(y)
        return self._fit(X, y)


def _check_enough_samples(n_samples, n_clusters):
    if n_samples < n_clusters:
        raise ValueError(
            f"n_samples={n_samples} should be >= n_clusters={n_clusters}."
        )


# --------------------------------------------------------------------- balanced


def _greedy_balanced_assign(D):
    """Balanced assignment of rows to centres, greedy (a starting point).

    Every centre receives ``floor(n / K)`` or ``ceil(n / K)`` rows. In
    rounds: every unassigned row proposes to its nearest centre that still
    has room; each centre keeps the nearest proposers up to its room and
    turns the others away; then the full centres close. Each round either
    places every proposer or closes a centre, so there are at most ``K + 1``
    rounds of ``O(n K)`` work and one sort of the proposers. The centres
    first take ``floor(n / K)`` rows each; the ``n mod K`` rows left then go
    to distinct centres, nearest pairs first.

    Parameters
    ----------
    D : ndarray of shape (n_samples, n_clusters)
        Squared distances of rows to centres; ``n_samples >= n_clusters``.

    Returns
    -------
    labels : ndarray of shape (n_samples,), dtype=int64
    """
    n, k = D.shape
    quota = n // k
    labels = np.full(n, -1, dtype=np.int64)
    room = np.full(k, quota, dtype=np.int64)
    free = np.arange(n)
    while free.size:
        open_ = np.flatnonzero(room > 0)
        if open_.size == 0:
            break
        sub = D[free][:, open_]
        best = sub.argmin(axis=1)
        choice = open_[best]
        dist = sub[np.arange(free.size), best]
        order = np.lexsort((dist, choice))  # by centre, nearest first
        centre = choice[order]
        first = np.searchsorted(centre, centre, side="left")
        rank = np.arange(centre.size) - first
        keep = rank < room[centre]
        labels[free[order[keep]]] = centre[keep]
        room -= np.bincount(centre[keep], minlength=k)
        free = np.sort(free[order[~keep]])
    if free.size:
        # The n mod K rows left: one to each of n mod K distinct centres.
        sub = D[free]
        taken = np.zeros(k, dtype=bool)
        placed = np.zeros(free.size, dtype=bool)
        flat = np.argsort(sub, axis=None, kind="stable")
        rows, cols = np.unravel_index(flat, sub.shape)
        for r, c in zip(rows, cols):
            if not placed[r] and not taken[c]:
                labels[free[r]] = c
                placed[r] = taken[c] = True
                if placed.all():
                    break
    return labels


#: Rows the balancing prices are estimated on (an evenly spaced subset of
#: larger data sets: prices are population quantities, and the greedy pass
#: over all rows settles the quotas exactly).
_PRICE_ROWS = 4096


def _balancing_prices(D, prices=None, n_iter=30):
    """Per-centre prices that make the nearest-centre assignment balanced.

    Entropic optimal transport (Sinkhorn iterations in the log domain) of
    the rows onto ``K`` centres of equal mass ``n / K``, at a temperature of
    a fifth of the mean distance gap ``D - min_c D``: the dual potentials
    ``p`` are such that ``argmin_c (D[i, c] + p[c])`` gives nearly equal
    cluster sizes (the optimal balanced assignment has exactly this form).
    ``prices`` warm-starts the iterations (the previous Lloyd step's).
    Beyond ``_PRICE_ROWS`` rows, the prices are estimated on an evenly
    spaced subset of them.
    """
    if len(D) > _PRICE_ROWS:
        D = D[np.linspace(0, len(D) - 1, _PRICE_ROWS).astype(np.intp)]
    n, k = D.shape
    gap = D - D.min(axis=1, keepdims=True)
    tau = 0.2 * float(gap.mean())
    p = np.zeros(k) if prices is None else prices.copy()
    if tau <= 0.0:  # every row is equidistant from all centres
        return p
    mass = n / k
    for _ in range(n_iter):
        # Row-normalised plan exp(-(gap + p) / tau); its column masses.
        L = gap + p
        L -= L.min(axis=1, keepdims=True)
        L *= -1.0 / tau
        np.exp(L, out=L)
        L /= L.sum(axis=1, keepdims=True)
        step = tau * np.log(np.maximum(L.sum(axis=0), 1e-300) / mass)
        p += step
        if np.abs(step).max() <= 1e-3 * tau:
            break
    return p - p.min()


def _balanced_assign(D, prices=None):
    """Balanced assignment: every centre gets ``floor(n / K)`` or
    ``ceil(n / K)`` rows.

    The greedy assignment of :func:`_greedy_balanced_assign` on the
    price-adjusted distances ``D + p`` (:func:`_balancing_prices`): the
    prices already balance the nearest-centre assignment almost exactly, so
    the greedy only settles the last few rows and its result stays close to
    the optimal balanced assignment (within a few percent of its summed
    distance in our tests, where the greedy alone can be 40% above it).

    Returns ``(labels, prices)``; ``prices`` warm-starts the next call.
    """
    prices = _balancing_prices(D, prices, n_iter=30 if prices is None else 10)
    return _greedy_balanced_assign(D + prices), prices


def _centres_of(X, labels, k):
    """Mean of the rows of each cluster (every cluster is non-empty here)."""
    n = len(labels)
    onehot = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    return np.asarray(onehot @ X) / np.bincount(labels, minlength=k)[:, None]


@fill_doc
class BalancedKMeans(RouterMixin, ClusterMixin, BaseEstimator):
    """K-means whose training assignment gives every cluster the same size.

    Lloyd's algorithm, except that every assignment step is
    capacity-constrained: each of the ``n_clusters`` clusters receives
    ``floor(n / K)`` or ``ceil(n / K)`` training rows (see Notes for how), in
    ``O(n K d + n log n)`` per step, so 60,000 rows are clustered in seconds.
    No cluster is ever empty or tiny, so every expert of a split gets a fair
    share of the data.

    New points are routed without the constraint: :meth:`predict` is the
    nearest centre and :meth:`predict_proba` the Student-t kernel
    ``1 / (1 + d^2)`` to the centres, normalised (the soft routing
    :func:`hemoe_sk.cluster.routing.soft_assign` gives any router with
    ``cluster_centers_``), whose argmax is :meth:`predict`.

    Read more in the :doc:`user guide </signals>`.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters K.

    max_iter : int, default=100
        Maximum number of Lloyd iterations of one run.

    n_init : int, default=3
        Number of runs from different k-means++ initialisations; the run with
        the lowest (balanced) inertia is kept.

    tol : float, default=1e-4
        A run stops when the squared shift of the centres, summed, falls to
        ``tol`` times the mean variance of the features or below.

    random_state : int, RandomState instance or None, default=None
        Seeds the k-means++ initialisations. An int gives identical fits.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Cluster centres (means of the clusters' rows at the last update;
        :attr:`labels_` is the balanced assignment to these centres).

    labels_ : ndarray of shape (n_samples,), dtype=int64
        Balanced training assignment: cluster sizes differ by at most one.
        ``predict`` on the training rows (nearest centre) may differ from it
        where the balance moved a row; see :attr:`training_agreement_`.

    inertia_ : float
        Sum of squared distances of the training rows to the centre of their
        (balanced) cluster.

    n_iter_ : int
        Number of Lloyd iterations of the kept run.

    n_clusters_ : int
        Number of clusters, equal to ``n_clusters``.

    training_agreement_ : float
        Fraction of training rows whose nearest centre is the cluster the
        balanced assignment gave them.

    %(fitted_features)s

    See Also
    --------
    sklearn.cluster.KMeans : The unconstrained algorithm.
    ClassGroupClusterer : Groups of mutually confused classes.
    WithinClassClusterer : Sub-populations within classes.

    Notes
    -----
    The optimal balanced assignment (a transportation problem) is a
    nearest-centre assignment after adding a price to each centre's
    distances. The prices are estimated by Sinkhorn iterations (entropic
    transport onto centres of equal mass, on at most 4,096 evenly spaced
    rows, warm-started from the previous step), then a greedy pass over the
    price-adjusted distances settles the quotas exactly: in rounds, each
    unassigned row proposes to its nearest centre with room left, and each
    centre keeps its nearest proposers. In tests against the exact optimum
    the cost is 3% higher on average. A run stops when no row changes
    cluster, when the centres stop moving (``tol``), or when a step raises
    the inertia (the assignment is not exactly optimal, so descent is not
    guaranteed); the lowest-inertia state is kept.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_blobs
    >>> from hemoe_sk.cluster import BalancedKMeans
    >>> X, _ = make_blobs(n_samples=[150, 30, 30], random_state=0)
    >>> km = BalancedKMeans(n_clusters=3, random_state=0).fit(X)
    >>> np.bincount(km.labels_)
    array([70, 70, 70])
    >>> km.predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints: dict = {
        **_SHARED_CONSTRAINTS,
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, n_clusters=8, *, max_iter=100, n_init=3, tol=1e-4, random_state=None):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.n_init = n_init
        self.tol = tol
        self.random_state = random_state

    def _run(self, X, x_sq, seed, tol):
        """One Lloyd run from a k-means++ start.

        Returns ``(centres, labels, inertia, n_iter)``: the state of lowest
        inertia met, whose labels are the balanced assignment to its
        centres. Stops when no row changes cluster, when the centres move
        less than ``tol`` (summed squared shift), or when an assignment step
        raises the inertia (the balanced assignment is not exactly optimal,
        so Lloyd's descent is not guaranteed; this ends any cycling).
        """
        k = self.n_clusters
        rows = np.arange(len(X))
        centers, _ = kmeans_plusplus(X, k, random_state=seed, x_squared_norms=x_sq)
        centers = np.asarray(centers, dtype=np.float64)
        labels = prices = best = None
        for n_iter in range(1, self.max_iter + 2):
            D = _sq_distances(X, centers, x_sq)
            previous = labels
            labels, prices = _balanced_assign(D, prices)
            inertia = float(D[rows, labels].sum())
            if best is not None and inertia >= best[2]:
                break
            best = (centers, labels, inertia, n_iter)
            if n_iter > self.max_iter or (
                previous is not None and np.array_equal(labels, previous)
            ):
                break
            new = _centres_of(X, labels, k)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol:
                # One more assignment step to the final centres.
                D = _sq_distances(X, centers, x_sq)
                labels, _ = _balanced_assign(D, prices)
                inertia = float(D[rows, labels].sum())
                if inertia < best[2]:
                    best = (centers, labels, inertia, n_iter)
                break
        return best

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Cluster ``X`` into ``n_clusters`` clusters of equal size.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training rows (a node's embeddings); float32 is accepted.

        y : Ignored
            Not used; accepted so that a node can pass its class labels to
            every clusterer alike.

        Returns
        -------
        self : BalancedKMeans
            Fitted clusterer.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        _check_enough_samples(X.shape[0], self.n_clusters)
        X64 = np.asarray(X, dtype=np.float64)
        x_sq = np.einsum("ij,ij->i", X64, X64)
        tol = self.tol * float(np.mean(np.var(X64, axis=0)))
        rng = check_random_state(self.random_state)
        seeds = rng.randint(_MAX_SEED, size=self.n_init)
        best = None
        for seed in seeds:
            run = self._run(X64, x_sq, seed, tol)
            if best is None or run[2] < best[2]:
                best = run
        centers, labels, inertia, n_iter = best
        self.cluster_centers_ = centers
        self.labels_ = labels
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.n_clusters_ = self.n_clusters
        self.training_agreement_ = float(
            np.mean(_sq_distances(X64, centers, x_sq).argmin(axis=1) == labels)
        )
        return self

    def _route_proba(self, X):
        q = _student_t(X, self.cluster_centers_)
        return q / q.sum(axis=1, keepdims=True)

    def _route(self, X):
        return _sq_distances(X, self.cluster_centers_).argmin(axis=1).astype(np.int64)


# ------------------------------------------------------------------ class groups


def _renumber_by_first(groups):
    """Renumber group labels 0..G-1 in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


@fill_doc
class ClassGroupClusterer(_ClassLabelsMixin, ClusterMixin, BaseEstimator):
    """Groups of mutually confused classes, routed by a softmax head (HD-CNN).

    :meth:`fit` trains a multinomial ``LogisticRegression`` head on the rows
    and their classes (a node network's own output layer is such a linear
    softmax head on its embeddings), and reads its soft confusion matrix on
    the training rows, ``M[i, j]`` = mean over the rows of class ``i`` of
    ``P(j | x)``. Its symmetric off-diagonal part
    ``A = (M + M.T) / 2, diag(A) = 0`` is a similarity between classes: how
    often the head mixes them up. Spectral clustering of ``A``
    (``affinity="precomputed"``) puts the classes into ``n_clusters``
    groups, so that each expert is given classes that are hard to tell
    apart, and the coarse decision between groups is an easy one.

    Routing needs no labels: ``predict_proba(X)[:, g]`` is the head's
    probability of the classes of group ``g``, summed; :meth:`predict` is its
    argmax.

    Read more in the :doc:`user guide </signals>`.

    Parameters
    ----------
    n_clusters : int, default=2
        Number of class groups. With fewer classes than ``n_clusters`` every
        class is its own group and :attr:`n_clusters_` is the number of
        classes (a ``UserWarning`` says so).

    C : float, default=1.0
        Inverse regularisation strength of the head. Smaller values give a
        softer head, hence a denser confusion matrix.

    max_iter : int, default=1000
        Maximum number of L-BFGS iterations of the head.

    random_state : int, RandomState instance or None, default=None
        Seeds the spectral clustering (and the k-means of the ``y=None``
        fallback). An int gives identical fits.

    Attributes
    ----------
    head_ : LogisticRegression
        The fitted head, trained on the class indices ``0..n_classes-1``.

    classes_ : ndarray of shape (n_classes,)
        Class labels seen in :meth:`fit` (the k-means pseudo-classes
        ``0..n_clusters-1`` when ``y`` was None).

    confusion_ : ndarray of shape (n_classes, n_classes)
        Soft confusion matrix ``M`` of the head on the training rows; rows
        sum to one.

    group_of_class_ : ndarray of shape (n_classes,), dtype=int64
        Group of each class of :attr:`classes_`. Groups are numbered in the
        order of their first class.

    class_groups_ : list of ndarray
        For each group, the class labels it holds.

    labels_ : ndarray of shape (n_samples,), dtype=int64
        Group of each training row's class (its label, not the head's
        guess). :meth:`predict` on the training rows gives the group of the
        head's guess instead; see :attr:`training_agreement_`.

    n_clusters_ : int
        Number of groups: ``min(n_clusters, n_classes)``.

    n_iter_ : int
        Number of L-BFGS iterations the head took.

    training_agreement_ : float
        Fraction of training rows that :meth:`predict` routes to the group of
        their own class.

    %(fitted_features)s

    See Also
    --------
    BalancedKMeans : Equal-size k-means.
    WithinClassClusterer : Sub-populations within classes.

    Notes
    -----
    The confusion is measured on the training rows, as HD-CNN does on a
    held-out set; a head that fits its training rows perfectly confuses
    nothing, so keep ``C`` moderate (or the embeddings noisy enough) for the
    matrix to carry a signal. A small constant (``1e-6`` of the largest
    entry) is added to every off-diagonal entry so that the similarity graph
    is connected.

    :meth:`fit` needs at least two classes. Without ``y`` (``fit(X)``),
    the classes are replaced by the k-means clusters of ``X`` with
    ``n_clusters`` clusters, each its own group: the clusterer is then
    k-means whose routing is learned by the head.

    Examples
    --------
    >>> import numpy as np
    >>> from hemoe_sk.cluster import ClassGroupClusterer
    >>> rng = np.random.RandomState(0)
    >>> means = np.array([[0, 0], [1, 0], [8, 8], [9, 8]])
    >>> y = np.repeat([0, 1, 2, 3], 50)
    >>> X = means[y] + rng.normal(size=(200, 2))
    >>> cg = ClassGroupClusterer(n_clusters=2, random_state=0).fit(X, y)
    >>> [g.tolist() for g in cg.class_groups_]
    [[0, 1], [2, 3]]
    >>> bool(np.allclose(cg.predict_proba(X).sum(axis=1), 1.0))
    True
    """

    _parameter_constraints: dict = {
        **_SHARED_CONSTRAINTS,
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_clusters=2, *, C=1.0, max_iter=1000, random_state=None):
        self.n_clusters = n_clusters
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def _group_classes(self, A, n_groups, seed):
        """Spectral clustering of the class similarity ``A`` into groups."""
        n_classes = A.shape[0]
        if n_groups >= n_classes:
            return np.arange(n_classes, dtype=np.int64)
        if n_groups == 1:
            return np.zeros(n_classes, dtype=np.int64)
        A = A + (1e-6 * max(A.max(), 1e-12)) * (1.0 - np.eye(n_classes))
        groups = SpectralClustering(
            n_clusters=n_groups, affinity="precomputed", random_state=seed
        ).fit_predict(A)
        return _renumber_by_first(groups)

    def _fit(self, X, y):
        """Train the head, measure its confusion, group the classes."""
        rng = check_random_state(self.random_state)
        kmeans_seed, spectral_seed = rng.randint(_MAX_SEED, size=2)
        if y is None:
            _check_enough_samples(X.shape[0], self.n_clusters)
            y = KMeans(
                n_clusters=self.n_clusters, n_init=3, random_state=kmeans_seed
            ).fit_predict(X)
        classes, y_idx = np.unique(y, return_inverse=True)
        n_classes = classes.size
        if n_classes < 2:
            raise ValueError(
                "ClassGroupClusterer needs rows of at least 2 classes to group "
                f"classes; got 1 class ({classes[0]!r})."
            )
        n_groups = min(self.n_clusters, n_classes)
        if n_groups < self.n_clusters:
            warnings.warn(
                f"ClassGroupClusterer: {n_classes} classes cannot form "
                f"n_clusters={self.n_clusters} groups; each class is its own "
                f"group (n_clusters_={n_classes}).",
                UserWarning,
                stacklevel=3,
            )
        head = LogisticRegression(C=self.C, max_iter=self.max_iter)
        head.fit(X, y_idx)
        P = head.predict_proba(X)
        M = np.zeros((n_classes, n_classes))
        np.add.at(M, y_idx, P)
        M /= np.bincount(y_idx, minlength=n_classes)[:, None]
        A = (M + M.T) / 2.0
        np.fill_diagonal(A, 0.0)
        group_of_class = self._group_classes(A, n_groups, spectral_seed)

        self.head_ = head
        self.classes_ = classes
        self.confusion_ = M
        self.group_of_class_ = group_of_class
        self.n_clusters_ = int(group_of_class.max()) + 1
        self.class_groups_ = [
            classes[group_of_class == g] for g in range(self.n_clusters_)
        ]
        self.labels_ = group_of_class[y_idx]
        self.n_iter_ = int(np.max(head.n_iter_))
        self.training_agreement_ = float(
            np.mean(self._proba(P).argmax(axis=1) == self.labels_)
        )
        return self

    def _proba(self, P):
        """Group probabilities from class probabilities ``P``."""
        member = np.zeros((self.classes_.size, self.n_clusters_))
        member[np.arange(self.classes_.size), self.group_of_class_] = 1.0
        q = P @ member
        return q / q.sum(axis=1, keepdims=True)

    def _route_proba(self, X):
        return self._proba(self.head_.predict_proba(X))


# ----------------------------------------------------------------- within class


def _n_subclusters(n_distinct, n_subclusters, n_clusters):
    """Sub-clusters per class: ``n_subclusters`` capped by the class's
    distinct rows; then, while there are fewer than ``n_clusters`` in all,
    one more for the class with the most distinct rows per sub-cluster."""
    m = np.minimum(n_subclusters, n_distinct)
    while m.sum() < n_clusters:
        room = m < n_distinct
        ratio = np.where(room, n_distinct / m, -np.inf)
        m[int(np.argmax(ratio))] += 1
    return m


@fill_doc
class WithinClassClusterer(_ClassLabelsMixin, ClusterMixin, BaseEstimator):
    """Sub-populations within classes, grouped across classes (GEORGE-like).

    :meth:`fit` runs k-means with ``n_subclusters`` clusters on the rows of
    each class separately, then groups all the sub-cluster centroids into
    ``n_clusters`` groups by k-means on the centroids. With
    ``center_classes=True`` (default) each centroid is first taken relative
    to its class's mean, so the groups follow the *within-class* variation
    that several classes share (pose, style, background...) rather than the
    classes themselves: an expert then sees sub-populations of several
    classes, even where the embedding has collapsed onto the classes and
    plain k-means would hand each expert a single class.

    Routing needs no labels: :meth:`predict` sends a point to the group of
    its nearest sub-centroid; :meth:`predict_proba` sums the Student-t kernel
    ``1 / (1 + d^2)`` to the sub-centroids over each group and normalises.

    Read more in the :doc:`user guide </signals>`.

    Parameters
    ----------
    n_clusters : int, default=2
        Number of groups (routes).

    n_subclusters : int, default=2
        Sub-clusters per class. A class with fewer distinct rows uses fewer.
        Where the classes' sub-clusters number fewer than ``n_clusters`` in
        all, the classes with the most rows per sub-cluster get more, until
        there are ``n_clusters``.

    center_classes : bool, default=True
        Group the sub-centroids after subtracting their class's mean (the
        within-class offsets). ``False`` groups the raw centroids, which
        keeps the sub-clusters of one class together wherever the classes
        are far apart.

    random_state : int, RandomState instance or None, default=None
        Seeds every k-means. An int gives identical fits.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen in :meth:`fit` (one class, ``0``, when ``y`` was
        None).

    subcluster_centers_ : ndarray of shape (n_subclusters_total, n_features)
        Centroids of all sub-clusters, class by class, in the input space
        (these route).

    subcluster_class_ : ndarray of shape (n_subclusters_total,)
        Class label of each sub-cluster.

    subcluster_group_ : ndarray of shape (n_subclusters_total,), dtype=int64
        Group of each sub-cluster.

    labels_ : ndarray of shape (n_samples,), dtype=int64
        Group of each training row's own sub-cluster (found within its
        class). :meth:`predict` on the training rows looks for the nearest
        sub-centroid of any class instead; see :attr:`training_agreement_`.

    n_clusters_ : int
        Number of groups found: ``n_clusters``, fewer only when the
        (centred) sub-centroids have fewer distinct values.

    training_agreement_ : float
        Fraction of training rows that :meth:`predict` routes to the group
        of :attr:`labels_`.

    %(fitted_features)s

    See Also
    --------
    BalancedKMeans : Equal-size k-means.
    ClassGroupClusterer : Groups of mutually confused classes.

    Notes
    -----
    :meth:`predict` (nearest sub-centroid) and the argmax of
    :meth:`predict_proba` (kernel mass per group) agree except near group
    boundaries, where a group with several close sub-centroids can outweigh
    a single nearest one.

    Without ``y`` all rows form one class, which then gets
    ``max(n_subclusters, n_clusters)`` sub-clusters: with the defaults this
    is k-means with ``n_clusters`` clusters.

    Examples
    --------
    >>> import numpy as np
    >>> from hemoe_sk.cluster import WithinClassClusterer
    >>> rng = np.random.RandomState(0)
    >>> # Two classes far apart; each has a "left" and a "right" part.
    >>> means = np.array([[-1, 0], [1, 0], [-1, 20], [1, 20]])
    >>> part = np.repeat([0, 1, 2, 3], 50)
    >>> X = means[part] + 0.2 * rng.normal(size=(200, 2))
    >>> y = part // 2
    >>> wc = WithinClassClusterer(n_clusters=2, random_state=0).fit(X, y)
    >>> [np.unique(y[wc.labels_ == g]).tolist() for g in range(2)]  # both classes
    [[0, 1], [0, 1]]
    >>> wc.predict_proba(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints: dict = {
        **_SHARED_CONSTRAINTS,
        "n_subclusters": [Interval(Integral, 1, None, closed="left")],
        "center_classes": ["boolean"],
    }

    def __init__(self, n_clusters=2, *, n_subclusters=2, center_classes=True, random_state=None):
        self.n_clusters = n_clusters
        self.n_subclusters = n_subclusters
        self.center_classes = center_classes
        self.random_state = random_state

    def _fit(self, X, y):
        """Find the sub-clusters of every class and group them."""
        X64 = np.asarray(X, dtype=np.float64)
        n_samples = X64.shape[0]
        if y is None:
            y = np.zeros(n_samples, dtype=np.int64)
        classes, y_idx = np.unique(y, return_inverse=True)
        rows_of = [np.flatnonzero(y_idx == c) for c in range(classes.size)]
        n_distinct = np.array([len(np.unique(X64[r], axis=0)) for r in rows_of])
        if n_distinct.sum() < self.n_clusters:
            raise ValueError(
                f"n_samples={n_samples} with {int(n_distinct.sum())} distinct "
                f"rows per class in all should be >= n_clusters={self.n_clusters}."
            )
        n_sub = _n_subclusters(n_distinct, self.n_subclusters, self.n_clusters)
        rng = check_random_state(self.random_state)
        seeds = rng.randint(_MAX_SEED, size=classes.size + 1)

        centers, offsets, sub_class, sub_of_row = [], [], [], np.empty(n_samples, np.int64)
        for c, rows in enumerate(rows_of):
            Xc = X64[rows]
            if n_sub[c] == 1:
                local = np.zeros(len(rows), dtype=np.int64)
                cc = Xc.mean(axis=0, keepdims=True)
            else:
                km = KMeans(n_clusters=int(n_sub[c]), n_init=3, random_state=seeds[c])
                local = km.fit_predict(Xc)
                cc = km.cluster_centers_
            sub_of_row[rows] = local + len(centers)
            centers.extend(cc)
            offsets.extend(cc - Xc.mean(axis=0))
            sub_class.extend([c] * len(cc))
        centers = np.asarray(centers)
        points = np.asarray(offsets) if self.center_classes else centers

        n_points = len(points)
        if self.n_clusters >= n_points:
            groups = np.arange(n_points, dtype=np.int64)
        else:
            groups = KMeans(
                n_clusters=self.n_clusters, n_init=10, random_state=seeds[-1]
            ).fit_predict(points)
            groups = _renumber_by_first(groups)

        self.classes_ = classes
        self.subcluster_centers_ = centers
        self.subcluster_class_ = classes[np.asarray(sub_class)]
        self.subcluster_group_ = groups
        self.n_clusters_ = int(groups.max()) + 1
        self.labels_ = groups[sub_of_row]
        nearest = _sq_distances(X64, centers).argmin(axis=1)
        self.training_agreement_ = float(np.mean(groups[nearest] == self.labels_))
        return self

    def _route_proba(self, X):
        kernel = _student_t(X, self.subcluster_centers_)
        member = np.zeros((len(self.subcluster_group_), self.n_clusters_))
        member[np.arange(len(self.subcluster_group_)), self.subcluster_group_] = 1.0
        q = kernel @ member
        return q / q.sum(axis=1, keepdims=True)

    def _route(self, X):
        nearest = _sq_distances(X, self.subcluster_centers_).argmin(axis=1)
        return self.subcluster_group_[nearest].astype(np.int64)
