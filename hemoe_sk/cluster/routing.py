"""Turning a fitted clusterer into a node router.

A router answers two questions about new embeddings: which cluster (hard
routing, :func:`hard_assign`) and with what probabilities (soft routing,
:func:`soft_assign`). Clusterers differ in what they offer, so the answer is
taken from the best source available, in this order:

1. ``predict_proba`` (``DECClusterer``'s Student-t assignments q,
   ``GaussianMixture``'s posteriors, :class:`NeighborVoteRouter`'s vote
   fractions, ``MixtureOfAutoencodersClusterer``'s reconstruction posteriors);
2. ``cluster_centers_`` (k-means and friends): the Student-t kernel of DEC with
   one degree of freedom, ``q_j ∝ (1 + ||z - mu_j||^2)^-1``, whose argmax is
   the nearest centre, i.e. ``predict``;
3. ``predict`` alone: one-hot assignments.

Clusterers without ``predict`` at all (``AgglomerativeClustering``,
``HDBSCAN``, ``SpectralClustering``, ``DBSCAN``) label only the points they
were fitted on. :class:`NeighborVoteRouter` wraps any of them and routes a new
point by a vote of its nearest training points.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context, clone
from sklearn.cluster import AgglomerativeClustering
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._docstrings import fill_doc
from .kernels import student_t_assign

__all__ = [
    "NeighborVoteRouter", "RouterMixin", "hard_assign", "n_routes", "soft_assign"
]

#: Share of NeighborVoteRouter's probabilities given by nearness to the
#: cluster centres: far below one vote, so it only orders equal votes.
_CENTRE_SHARE = 1e-6


def hard_assign(router, E):
    """Cluster index of every row of ``E`` (what hard routing follows)."""
    return np.asarray(router.predict(E), dtype=np.intp)


def n_routes(router):
    """Number of clusters a fitted router routes to, or ``None`` if unknown.

    Taken from ``n_clusters_`` (routers that find K themselves, such as
    :class:`NeighborVoteRouter`), else from ``cluster_centers_``, else from the
    ``n_clusters`` parameter.
    """
    k = getattr(router, "n_clusters_", None)
    if k is not None:
        return int(k)
    centers = getattr(router, "cluster_centers_", None)
    if centers is not None:
        return int(np.shape(centers)[0])
    k = getattr(router, "n_clusters", None)
    return None if k is None else int(k)


def soft_assign(router, E, n_clusters=None):
    """Routing probabilities, shape ``(len(E), n_clusters)``, rows sum to 1.

    ``n_clusters=None`` takes the number of clusters from the router
    (:func:`n_routes`).
    """
    if n_clusters is None:
        n_clusters = n_routes(router)
    if hasattr(router, "predict_proba"):
        q = np.asarray(router.predict_proba(E), dtype=np.float64)
    elif hasattr(router, "cluster_centers_"):
        q = student_t_assign(E, router.cluster_centers_)
    else:
        if n_clusters is None:
            raise ValueError(
                "soft_assign: the number of clusters is unknown for a router "
                "with predict only; pass n_clusters."
            )
        q = np.zeros((len(E), n_clusters))
        q[np.arange(len(E)), hard_assign(router, E)] = 1.0
    if n_clusters is not None and q.shape[1] != n_clusters:
        raise ValueError(
            f"The router gave {q.shape[1]} routing columns for {n_clusters} clusters."
        )
    return q / q.sum(axis=1, keepdims=True)


@fill_doc
class RouterMixin:
    """``predict_proba`` and ``predict`` of a clusterer that routes new points.

    The class implements ``_route_proba(X)``: the routing probabilities of
    validated ``X``, shape ``(n_samples, n_routes)``, rows summing to one. It
    may override ``_route(X)`` (the route of each row of validated ``X``; by
    default the argmax of ``_route_proba``) and ``_validate_new(X)`` (by
    default: check that the estimator is fitted, then validate ``X`` as
    float64 or float32 with the features seen in ``fit``).
    """

    def _validate_new(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

    def _route(self, X):
        return self._route_proba(X).argmax(axis=1).astype(np.int64)

    def predict_proba(self, X):
        """Soft routing: the probability of every cluster for new points.

        The class description says how they are computed.

        %(new_X_parameters)s

        Returns
        -------
        proba : ndarray of shape (n_samples, n_routes)
            Rows sum to one. ``n_routes`` is ``n_clusters_`` where the
            estimator has it, else ``n_clusters``.
        """
        return self._route_proba(self._validate_new(X))

    def predict(self, X):
        """Hard routing: the cluster of every new point.

        The argmax of :meth:`predict_proba` unless the class description
        says otherwise.

        %(new_X_parameters)s

        Returns
        -------
        labels : ndarray of shape (n_samples,), dtype=int64
            Cluster index of each point.
        """
        return self._route(self._validate_new(X))


def _contiguous(raw):
    """Map the non-negative labels of ``raw`` onto 0..K-1 (order kept); noise
    (negative labels) stays -1."""
    raw = np.asarray(raw).ravel()
    labels = np.full(raw.shape, -1, dtype=np.int64)
    kept = raw >= 0
    if kept.any():
        _, labels[kept] = np.unique(raw[kept], return_inverse=True)
    return labels


@fill_doc
class NeighborVoteRouter(RouterMixin, ClusterMixin, BaseEstimator):
    """Route new points by a vote of their nearest clustered training points.

    Makes any clusterer usable as a node router, including those that only
    label the points they were fitted on (no ``predict``):
    ``AgglomerativeClustering``, ``HDBSCAN``, ``DBSCAN``, ``OPTICS``,
    ``SpectralClustering``. :meth:`fit` fits a clone of ``clusterer`` and
    keeps the training points with their cluster labels; :meth:`predict` gives
    a new point the cluster most of its ``n_neighbors`` nearest training
    points belong to, and :meth:`predict_proba` the vote fractions (for soft
    routing).

    Cluster labels are renumbered 0..K-1 in the order of the wrapped
    clusterer's labels. Points the clusterer calls noise (label -1, as HDBSCAN
    and DBSCAN do) join the cluster of their nearest non-noise training point,
    so every training point belongs to a cluster and no route leads nowhere.

    Read more in the :doc:`user guide </routers>`.

    Parameters
    ----------
    clusterer : estimator, default=None
        The clusterer to wrap: anything with ``fit_predict`` or ``fit`` and
        ``labels_``. It is cloned, never modified. ``None`` uses
        ``AgglomerativeClustering()`` (Ward linkage). Its own parameters are
        reachable as ``clusterer__<name>`` (e.g.
        ``clusterer__min_cluster_size`` for ``HDBSCAN``), so a parameter grid
        can search over them.

    n_neighbors : int, default=15
        Number of nearest training points that vote. Capped at the size of
        the smallest cluster found (and at the number of training points), so
        that a small cluster is not outvoted on its own points; the value used
        is :attr:`n_neighbors_`.

    n_clusters : int or None, default=None
        When not None, set as the wrapped clusterer's ``n_clusters`` (its
        own value is used otherwise). A clusterer without an ``n_clusters``
        parameter (HDBSCAN, DBSCAN) finds the number of clusters itself; then
        a warning says that ``n_clusters`` was ignored. The node search sets
        this parameter for every candidate K.

    weights : {"uniform", "distance"}, default="uniform"
        ``"uniform"``: every neighbour has one vote. ``"distance"``: votes
        weighted by the inverse distance; a training point then routes
        exactly to its own cluster.

    random_state : int, RandomState instance or None, default=None
        When not None, set as the wrapped clusterer's ``random_state`` if it
        has one. The vote itself is deterministic.

    n_jobs : int or None, default=None
        Parallel jobs of the neighbour search (``NearestNeighbors``).

    Attributes
    ----------
    clusterer_ : estimator
        The fitted clone of ``clusterer``.

    labels_ : ndarray of shape (n_samples,), dtype=int64
        Cluster of each training point: the wrapped clusterer's label,
        renumbered 0..K-1, noise assigned as described above.

    n_clusters_ : int
        Number of clusters found (K); the number of routing columns of
        :meth:`predict_proba`.

    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Mean of the training points of each cluster (used only to order
        equal votes, see :meth:`predict_proba`).

    n_noise_ : int
        Number of training points the wrapped clusterer labelled noise.

    n_neighbors_ : int
        Number of voting neighbours actually used.

    training_agreement_ : float
        Fraction of training points that :meth:`predict` routes to their own
        cluster (``labels_``): how faithfully the vote reproduces the
        clustering. Close to 1 for well-separated clusters.

    %(fitted_features)s

    See Also
    --------
    sklearn.neighbors.KNeighborsClassifier : The same vote, with given labels.
    hemoe_sk.cluster.routing.soft_assign : How a node reads the router.

    Notes
    -----
    :meth:`predict_proba` is the vote fractions: the share of the nearest
    training points (weighted as ``weights`` says) in each cluster, and
    :meth:`predict` their argmax. A negligible share (``1e-6`` of the total)
    is given by nearness to the cluster centres (Student-t kernel
    ``1 / (1 + d^2)``). It changes no majority; it breaks ties between equal
    votes in favour of the nearer centre, and it orders the clusters a point
    has no vote for, so that "the points of other clusters with the highest
    soft assignment to cluster c" (``overlap``) are the ones nearest to c.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.cluster import HDBSCAN
    >>> from sklearn.datasets import make_blobs
    >>> from hemoe_sk.cluster import NeighborVoteRouter
    >>> X, _ = make_blobs(n_samples=300, centers=[[0, 0], [6, 0], [0, 6]],
    ...                   random_state=0)
    >>> router = NeighborVoteRouter(HDBSCAN(min_cluster_size=20, copy=True)).fit(X)
    >>> router.n_clusters_
    3
    >>> router.predict(X[:5]).shape
    (5,)
    >>> bool(np.allclose(router.predict_proba(X[:5]).sum(axis=1), 1.0))
    True

    The wrapped clusterer's parameters can be set (and searched) directly:

    >>> router.set_params(clusterer__min_cluster_size=40).get_params()[
    ...     "clusterer__min_cluster_size"]
    40
    """

    _parameter_constraints: dict = {
        "clusterer": [None, HasMethods(["fit"])],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "n_clusters": [None, Interval(Integral, 1, None, closed="left")],
        "weights": [StrOptions({"uniform", "distance"})],
        "random_state": ["random_state"],
        "n_jobs": [None, Integral],
    }

    def __init__(
        self,
        clusterer=None,
        *,
        n_neighbors=15,
        n_clusters=None,
        weights="uniform",
        random_state=None,
        n_jobs=None,
    ):
        self.clusterer = clusterer
        self.n_neighbors = n_neighbors
        self.n_clusters = n_clusters
        self.weights = weights
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.clusterer is not None:
            try:
                tags.non_deterministic = get_tags(self.clusterer).non_deterministic
            except (TypeError, AttributeError):  # not a scikit-learn estimator
                pass
        return tags

    def _make_clusterer(self):
        """Clone of the wrapped clusterer with ``n_clusters`` and
        ``random_state`` forwarded."""
        base = AgglomerativeClustering() if self.clusterer is None else self.clusterer
        clusterer = clone(base)
        params = clusterer.get_params(deep=False)
        update = {}
        if self.n_clusters is not None:
            if "n_clusters" in params:
                update["n_clusters"] = self.n_clusters
            else:
                warnings.warn(
                    f"NeighborVoteRouter: n_clusters={self.n_clusters} was ignored: "
                    f"{type(clusterer).__name__} has no n_clusters parameter and "
                    "finds the number of clusters itself (search its own "
                    "parameters instead, e.g. with cluster_param_grid).",
                    UserWarning,
                    stacklevel=4,
                )
        if self.random_state is not None and "random_state" in params:
            update["random_state"] = self.random_state
        return clusterer.set_params(**update) if update else clusterer

    @_fit_context(
        # The wrapped clusterer validates its own parameters when it is fit.
        prefer_skip_nested_validation=False
    )
    def fit(self, X, y=None):
        """Cluster ``X`` with a clone of ``clusterer`` and index the points.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points (a node's embeddings).

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : NeighborVoteRouter
            Fitted router.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        n_samples = X.shape[0]
        clusterer = self._make_clusterer()
        if hasattr(clusterer, "fit_predict"):
            raw = clusterer.fit_predict(X)
        else:
            raw = getattr(clusterer.fit(X), "labels_", None)
            if raw is None:
                raise TypeError(
                    f"{type(clusterer).__name__} has neither fit_predict nor a "
                    "labels_ attribute after fit: NeighborVoteRouter needs the "
                    "cluster of every training point."
                )
        raw = np.asarray(raw)
        if raw.shape != (n_samples,):
            raise ValueError(
                f"{type(clusterer).__name__} returned labels of shape {raw.shape} "
                f"for {n_samples} samples."
            )
        labels = _contiguous(raw)
        noise = labels < 0
        n_noise = int(noise.sum())
        if n_noise == n_samples:
            warnings.warn(
                f"NeighborVoteRouter: {type(clusterer).__name__} labelled every "
                "training point as noise; they form a single cluster.",
                ConvergenceWarning,
                stacklevel=3,
            )
            labels[:] = 0
        elif n_noise:
            # Noise joins the cluster of its nearest non-noise training point.
            nn = NearestNeighbors(n_neighbors=1, n_jobs=self.n_jobs).fit(X[~noise])
            nearest = nn.kneighbors(X[noise], return_distance=False)[:, 0]
            labels[noise] = labels[~noise][nearest]

        n_clusters = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=n_clusters)
        self.clusterer_ = clusterer
        self.labels_ = labels
        self.n_clusters_ = n_clusters
        self.n_noise_ = n_noise
        self.n_neighbors_ = int(max(1, min(self.n_neighbors, n_samples, sizes.min())))
        X64 = np.asarray(X, dtype=np.float64)
        centers = np.zeros((n_clusters, X.shape[1]))
        np.add.at(centers, labels, X64)
        self.cluster_centers_ = centers / sizes[:, None]
        self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors_, n_jobs=self.n_jobs)
        self.nn_.fit(X)
        self.training_agreement_ = float(
            np.mean(self._route_proba(X).argmax(axis=1) == labels)
        )
        return self

    def _route_proba(self, X):
        """Routing probabilities of validated ``X``, shape ``(n, n_clusters_)``."""
        n = X.shape[0]
        k = self.n_neighbors_
        dist, ind = self.nn_.kneighbors(X, n_neighbors=k)
        if self.weights == "distance":
            with np.errstate(divide="ignore"):
                w = 1.0 / dist
            exact = np.isinf(w)
            rows = exact.any(axis=1)
            # Like KNeighborsClassifier: exact matches take all of the weight.
            w[rows] = exact[rows].astype(np.float64)
        else:
            w = np.ones_like(dist)
        votes = np.zeros((n, self.n_clusters_))
        rows = np.repeat(np.arange(n), k)
        np.add.at(votes, (rows, self.labels_[ind].ravel()), w.ravel())
        votes /= votes.sum(axis=1, keepdims=True)
        # A negligible share by nearness to the cluster centres (Student-t
        # kernel): breaks ties between equal votes, and ranks the clusters a
        # point has no vote for (what overlap reads).
        kernel = student_t_assign(X, self.cluster_centers_)
        proba = votes + _CENTRE_SHARE * kernel
        return proba / proba.sum(axis=1, keepdims=True)
