"""The Student-t kernel of soft cluster assignments, written once.

DEC assigns a code ``z`` to centre ``mu_j`` with weight

    q_j ∝ (1 + ||z - mu_j||^2 / alpha) ^ (-(alpha + 1) / 2)

(Xie et al., 2016). With ``alpha = 1`` this is ``1 / (1 + d^2)``, whose
argmax is the nearest centre; the routers use it to give centroid clusterers
(k-means) soft assignments. :func:`student_t_log_assign` works on numpy arrays
(in float64, without an ``(n, k, d)`` temporary) and on torch tensors
(differentiable, for DEC's refinement).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_softmax

__all__ = [
    "squared_distances",
    "student_t_assign",
    "student_t_log_assign",
    "student_t_log_kernel",
]


def squared_distances(Z, centers, z_sq=None):
    """``||z_i - mu_j||^2``, shape ``(len(Z), len(centers))``.

    numpy input gives float64 without an ``(n, k, d)`` temporary; ``z_sq``,
    the squared norms of the rows of ``Z``, may be passed when a loop reuses
    them (k-means steps). torch input is differentiable.
    """
    if isinstance(Z, torch.Tensor):
        return (Z[:, None, :] - centers[None, :, :]).pow(2).sum(dim=2)
    Z = np.asarray(Z, dtype=np.float64)
    C = np.asarray(centers, dtype=np.float64)
    if z_sq is None:
        z_sq = np.einsum("ij,ij->i", Z, Z)
    d2 = Z @ (-2.0 * C.T)
    d2 += z_sq[:, None]
    d2 += np.einsum("ij,ij->i", C, C)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def student_t_log_kernel(Z, centers, alpha=1.0):
    """Unnormalised log Student-t similarity of every row to every centre,
    ``-(alpha + 1) / 2 * log(1 + d^2 / alpha)``; its row-wise softmax is
    :func:`student_t_assign`. numpy (float64) or torch (differentiable)."""
    d2 = squared_distances(Z, centers)
    log1p = torch.log1p if isinstance(d2, torch.Tensor) else np.log1p
    return -(alpha + 1.0) / 2.0 * log1p(d2 / alpha)


def student_t_log_assign(Z, centers, alpha=1.0):
    """Log of the Student-t soft assignments of the rows of ``Z``.

    Parameters
    ----------
    Z : ndarray or torch.Tensor of shape (n_samples, n_dims)
        Points (codes, embeddings).
    centers : same type as ``Z``, of shape (n_clusters, n_dims)
        Cluster centres.
    alpha : float, default=1.0
        Degrees of freedom.

    Returns
    -------
    log_q : same type as ``Z``, of shape (n_samples, n_clusters)
        ``log q``; ``exp`` of each row sums to one. float64 for numpy input.

    Examples
    --------
    >>> import numpy as np
    >>> log_q = student_t_log_assign(np.array([[0.0], [3.0]]), np.array([[0.0], [2.0]]))
    >>> np.exp(log_q).round(3).tolist()
    [[0.833, 0.167], [0.167, 0.833]]
    """
    s = student_t_log_kernel(Z, centers, alpha)
    if isinstance(s, torch.Tensor):
        return torch.log_softmax(s, dim=1)
    return log_softmax(s, axis=1)


def student_t_assign(Z, centers, alpha=1.0):
    """Student-t soft assignments (rows sum to one), float64 numpy.

    Examples
    --------
    >>> import numpy as np
    >>> q = student_t_assign(np.zeros((1, 2)), np.array([[0.0, 0.0], [1.0, 0.0]]))
    >>> q.round(3).tolist()
    [[0.667, 0.333]]
    """
    q = np.exp(student_t_log_assign(Z, centers, alpha))
    return q / q.sum(axis=1, keepdims=True)
