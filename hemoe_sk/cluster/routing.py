"""Turning a fitted clusterer into a node router.

A router answers two questions about new embeddings: which cluster (hard
routing, :func:`hard_assign`) and with what probabilities (soft routing,
:func:`soft_assign`). Clusterers differ in what they offer, so the answer is
taken from the best source available, in this order:

1. ``predict_proba`` (``DECClusterer``'s Student-t assignments q,
   ``GaussianMixture``'s posteriors);
2. ``cluster_centers_`` (k-means and friends): the Student-t kernel of DEC with
   one degree of freedom, ``q_j ∝ (1 + ||z - mu_j||^2)^-1``, whose argmax is
   the nearest centre, i.e. ``predict``;
3. ``predict`` alone: one-hot assignments.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hard_assign", "soft_assign"]


def hard_assign(router, E):
    """Cluster index of every row of ``E`` (what hard routing follows)."""
    return np.asarray(router.predict(E), dtype=np.intp)


def soft_assign(router, E, n_clusters):
    """Routing probabilities, shape ``(len(E), n_clusters)``, rows sum to 1."""
    if hasattr(router, "predict_proba"):
        q = np.asarray(router.predict_proba(E), dtype=np.float64)
    elif hasattr(router, "cluster_centers_"):
        centers = np.asarray(router.cluster_centers_, dtype=np.float64)
        d2 = ((np.asarray(E, dtype=np.float64)[:, None, :] - centers[None]) ** 2).sum(-1)
        q = 1.0 / (1.0 + d2)
    else:
        q = np.zeros((len(E), n_clusters))
        q[np.arange(len(E)), hard_assign(router, E)] = 1.0
    if q.shape[1] != n_clusters:
        raise ValueError(
            f"The router gave {q.shape[1]} routing columns for {n_clusters} clusters."
        )
    return q / q.sum(axis=1, keepdims=True)
