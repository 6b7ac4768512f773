"""Routers as differentiable torch functions.

A node routes with a fitted router (an optional reducer, then a clusterer);
its soft assignment is computed in numpy (:func:`hemoe_sk.cluster.routing.soft_assign`).
Routing attributions (:mod:`hemoe_sk.inspection`) and joint refinement
(:mod:`hemoe_sk.refine`) need the same assignment as a torch function of the
node's embeddings, so gradients reach the embedder. :func:`router_scores`
gives it for the routers that have a closed form: reducers ``None``, ``PCA``
(whitened or not) and ``StandardScaler``; clusterers
:class:`~hemoe_sk.DECClusterer` (Student-t on its encoder's codes),
:class:`~hemoe_sk.MixtureOfAutoencodersClusterer`, ``GaussianMixture`` and
centroid clusterers (``cluster_centers_``: KMeans and friends, with
``soft_assign``'s Student-t kernel). Routers without one (neighbour votes,
predict-only clusterers, other reducers) raise a ``TypeError`` naming them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .kernels import student_t_log_kernel

__all__ = ["router_scores"]


def _as_tensor(a, device):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)


def _reducer_fn(reducer, device):
    """The router's reducer as a float64 torch function, or a TypeError."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    if reducer is None:
        return lambda e: e
    if isinstance(reducer, PCA):
        mean = _as_tensor(reducer.mean_, device)
        comp = _as_tensor(reducer.components_, device)
        scale = None
        if reducer.whiten:
            s = np.sqrt(np.asarray(reducer.explained_variance_, dtype=np.float64))
            s[s < np.finfo(reducer.explained_variance_.dtype).eps] = np.finfo(
                reducer.explained_variance_.dtype
            ).eps
            scale = _as_tensor(s, device)

        def pca(e):
            r = (e - mean) @ comp.T
            return r if scale is None else r / scale

        return pca
    if isinstance(reducer, StandardScaler):
        mean = None if getattr(reducer, "mean_", None) is None or not reducer.with_mean \
            else _as_tensor(reducer.mean_, device)
        scale = None if getattr(reducer, "scale_", None) is None or not reducer.with_std \
            else _as_tensor(reducer.scale_, device)

        def standardize(e):
            if mean is not None:
                e = e - mean
            return e if scale is None else e / scale

        return standardize
    raise TypeError(
        f"The router's reducer {type(reducer).__name__} has no differentiable form "
        "here: differentiable routing supports reducer=None, PCA and StandardScaler."
    )


class _ScoreFn(nn.Module):
    """Log-scores ``s`` of a router's clusterer (float64, ``softmax(s)`` are
    its ``predict_proba``), with the clusterer's own torch module, if any,
    registered so that eval mode reaches it."""

    def __init__(self, fn, module=None):
        super().__init__()
        self.fn = fn
        self.inner = module

    def forward(self, r):
        return self.fn(r)


def _clusterer_scores(clusterer, device):
    """``_ScoreFn`` for the supported clusterers, else a TypeError naming it."""
    from sklearn.mixture import GaussianMixture

    from .dec import DECClusterer
    from .mixae import MixtureOfAutoencodersClusterer
    from .routing import NeighborVoteRouter

    if isinstance(clusterer, DECClusterer):
        module = clusterer.autoencoder_.module_
        centers = _as_tensor(clusterer.cluster_centers_, device)
        alpha = float(clusterer.alpha)

        def dec(r):
            # DEC validates to float32 and encodes in float32; q in float64.
            z = module.encode(r.float()).reshape(len(r), -1).double()
            return student_t_log_kernel(z, centers, alpha)

        return _ScoreFn(dec, module)
    if isinstance(clusterer, MixtureOfAutoencodersClusterer):
        module = clusterer.module_
        scale = clusterer.n_features_in_ / (2.0 * clusterer.noise_variance_)

        def mixae(r):
            errors = module.errors(r.float()).reshape(len(r), -1).double()
            return -scale * errors

        return _ScoreFn(mixae, module)
    if isinstance(clusterer, GaussianMixture):
        return _ScoreFn(_gmm_scores(clusterer, device))
    if isinstance(clusterer, NeighborVoteRouter) or hasattr(clusterer, "predict_proba"):
        raise TypeError(
            f"The router's clusterer {type(clusterer).__name__} has no differentiable "
            "form (its probabilities are a vote or otherwise piecewise constant): "
            "differentiable routing supports DECClusterer, "
            "MixtureOfAutoencodersClusterer, GaussianMixture and clusterers with "
            "cluster_centers_ (KMeans and friends)."
        )
    if hasattr(clusterer, "cluster_centers_"):
        centers = _as_tensor(clusterer.cluster_centers_, device)

        def centroid(r):
            # soft_assign's kernel: q_j ∝ 1 / (1 + ||r - mu_j||^2).
            return student_t_log_kernel(r, centers, 1.0)

        return _ScoreFn(centroid)
    raise TypeError(
        f"The router's clusterer {type(clusterer).__name__} routes by predict alone "
        "(one-hot), which has no gradient: differentiable routing supports "
        "DECClusterer, MixtureOfAutoencodersClusterer, GaussianMixture and "
        "clusterers with cluster_centers_ (KMeans and friends)."
    )


def _gmm_scores(gmm, device):
    """Weighted log-likelihood of every component (scikit-learn's formula)."""
    means = _as_tensor(gmm.means_, device)
    k, d = means.shape
    pc = np.asarray(gmm.precisions_cholesky_, dtype=np.float64)
    kind = gmm.covariance_type
    if kind == "full":
        chol = pc
    elif kind == "tied":
        chol = np.repeat(pc[None], k, axis=0)
    elif kind == "diag":
        chol = np.stack([np.diag(p) for p in pc])
    else:  # spherical
        chol = np.stack([p * np.eye(d) for p in pc])
    log_det = np.log(np.stack([np.diag(c) for c in chol])).sum(axis=1)
    chol_t = _as_tensor(chol, device)
    const = _as_tensor(
        np.log(np.asarray(gmm.weights_, dtype=np.float64)) + log_det
        - 0.5 * d * np.log(2 * np.pi),
        device,
    )

    def gmm_scores(r):
        y = torch.einsum("nd,kde->nke", r, chol_t) - torch.einsum(
            "kd,kde->ke", means, chol_t
        )[None]
        return const[None] - 0.5 * y.pow(2).sum(dim=2)

    return gmm_scores


def router_scores(router, device="cpu"):
    """``E -> log-scores`` of a fitted router, differentiable in ``E``.

    ``softmax(scores(E))`` equals ``soft_assign(router, E)`` (float64).

    Parameters
    ----------
    router : hemoe_sk.node.Router
        Has ``reducer`` and ``clusterer``.
    device : str or torch.device

    Returns
    -------
    torch.nn.Module
        Maps a float tensor ``(n, embedding_dim)`` to ``(n, n_clusters)``
        float64 log-scores.

    Raises
    ------
    TypeError
        If the reducer or the clusterer has no differentiable form here.
    """
    if hasattr(router, "pair"):  # hemoe_sk.node.PairRouter
        return _PairScores(router_scores(router.router, device), router.pair,
                           router.margin)
    reduce = _reducer_fn(router.reducer, device)
    scores = _clusterer_scores(router.clusterer, device)
    return _RouterScores(reduce, scores)


class _PairScores(nn.Module):
    """A :class:`~hemoe_sk.node.PairRouter`'s log-scores: the base router's
    probabilities, with an ambiguous row's probability of the pair moved to
    the last route. Which rows are ambiguous is a step, not differentiated."""

    def __init__(self, base, pair, margin):
        super().__init__()
        self.base = base
        self.pair = pair
        self.margin = margin

    def forward(self, e):
        q = torch.softmax(self.base(e), dim=1)
        top, idx = torch.topk(q.detach(), 2, dim=1)
        lo, hi = idx.min(dim=1).values, idx.max(dim=1).values
        a, b = self.pair
        amb = ((top[:, 0] - top[:, 1]) < self.margin) & (lo == a) & (hi == b)
        keep = torch.ones_like(q)
        keep[amb, a] = 0.0
        keep[amb, b] = 0.0
        pair_mass = torch.where(amb, q[:, a] + q[:, b], torch.zeros_like(q[:, a]))
        out = torch.cat([q * keep, pair_mass[:, None]], dim=1)
        # log(0) would make NaN gradients; the smallest positive double
        # leaves the probabilities equal to the router's to float precision.
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))


class _RouterScores(nn.Module):
    def __init__(self, reduce, scores):
        super().__init__()
        self.reduce = reduce
        self.scores = scores

    def forward(self, e):
        return self.scores(self.reduce(e.reshape(len(e), -1).double()))
