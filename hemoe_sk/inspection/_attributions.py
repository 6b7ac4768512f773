"""Differentiable routing and routing attributions.

:func:`routing_module` turns a node's soft assignment into a torch module
(input rows -> routing probabilities, equal to the router's
``predict_proba`` on the node's embeddings); :func:`route_attributions`
differentiates it with captum (optional: ``pip install hemoe_sk[explain]``).
Both read ``tree_`` only, so they serve the hierarchical classifier and
regressor alike.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np
import torch
from torch import nn

from .._docstrings import fill_doc
from ..cluster.torch_routing import router_scores
from ..nn.inference import _embedding_fn, embed
from ..nn.inference import module_of as _module_of
from ._common import inner_node, require, resolve

__all__ = ["route_attributions", "routing_module"]


def _import_captum():
    attr = require(
        "captum.attr", "route_attributions",
        "`pip install hemoe_sk[explain]` (or `pip install captum`)",
    )
    return attr.IntegratedGradients, attr.LayerGradCam, attr.LayerAttribution


class _RoutingModule(nn.Module):
    """Input rows -> a node's routing probabilities (or log-similarities)."""

    def __init__(self, embedder, router, output):
        super().__init__()
        self.embedder = embedder
        self._embed = _embedding_fn(embedder)
        p = next(embedder.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        self.scores = router_scores(router, device)
        self.output = output
        self.n_clusters = int(router.n_clusters)

    def forward(self, x):
        e = self._embed(x).reshape(len(x), -1).double()
        s = self.scores(e)
        if self.output == "similarity":
            return s
        return torch.softmax(s, dim=1)


@contextlib.contextmanager
def _evaluating(module):
    """Eval mode (no dropout) inside, every submodule's mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@fill_doc
def routing_module(estimator, node=0, *, output="proba"):
    """A node's routing as a differentiable torch module.

    The module maps input rows (a float32 tensor of shape ``(n,
    n_features)``, already transformed by a pipeline's first steps) through
    the node's embedder network, the router's reducer and clusterer, to the
    routing probabilities of the node's children. With ``output="proba"``
    it equals ``node.router.predict_proba(embeddings)``; gradients flow back
    to the input.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier, \
            HierarchicalEmbeddingMoERegressor or Pipeline
        Fitted (any estimator with a fitted ``tree_``).
    node : int, default=0
        Id of an inner node (one that routes).
    output : {"proba", "similarity"}, default="proba"
        ``"proba"``: routing probabilities, rows summing to 1.
        ``"similarity"``: the unnormalised log-kernel of every cluster, whose
        softmax is ``"proba"``: for DEC and centroid routers the Student-t
        similarity to each centre, ``-(alpha + 1) / 2 * log(1 + d^2 /
        alpha)`` (alpha = 1 for k-means), for a Gaussian mixture the weighted
        log-likelihood, for the mixture of autoencoders the scaled negative
        reconstruction error. It depends on the chosen centre alone, not on
        the competing ones.

    Returns
    -------
    module : torch.nn.Module
        Shares the fitted networks (it copies nothing): put it in eval mode
        to drop dropout, and do not train it. Its ``n_clusters`` attribute
        is the number of children.

    Raises
    ------
    TypeError
        If the router has no differentiable form (a vote, a one-hot router,
        a reducer other than PCA or StandardScaler); the message names it.

    Examples
    --------
    >>> import numpy as np, torch
    %(fitted_tree_example)s
    >>> from hemoe_sk.inspection import routing_module
    >>> from hemoe_sk.nn import embed
    >>> module = routing_module(clf, 0).eval()
    >>> with torch.no_grad():
    ...     q = module(torch.as_tensor(X[:5], dtype=torch.float32)).numpy()
    >>> root = clf.tree_.nodes[0]
    >>> bool(np.allclose(q, root.router.predict_proba(embed(root.embedder, X[:5]))))
    True
    """
    if output not in ("proba", "similarity"):
        raise ValueError(f"output must be 'proba' or 'similarity', got {output!r}.")
    est, _ = resolve(estimator, None)
    node = inner_node(est.tree_, node)
    return _RoutingModule(_module_of(node.embedder), node.router, output)


def _image_shape(module, image_shape=None):
    shape = image_shape if image_shape is not None else getattr(module, "image_shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


@fill_doc
def route_attributions(
    estimator,
    X,
    node=0,
    *,
    target=None,
    output="proba",
    method="auto",
    layer=None,
    baseline=None,
    n_steps=32,
):
    """Which features (or pixels) push each sample toward its cluster at a node.

    The gradient of the node's soft assignment to a cluster (see
    :func:`routing_module`) through the node's embedder network, attributed
    to the input with captum:

    * ``"integrated_gradients"`` (captum's ``IntegratedGradients``): the
      path integral of the gradient from ``baseline`` to the sample, times
      the difference; the attributions of a sample add up (to the integral's
      accuracy) to ``f(x) - f(baseline)``. The default for MLP embedders.
    * ``"gradcam"`` (captum's ``LayerGradCam``, Grad-CAM of Selvaraju et al.
      with the routing probability as its target): the last convolution's
      activations weighted by the spatially averaged gradients, ReLU'd, and
      upsampled (bilinear) to the image. The default for
      :class:`~hemoe_sk.nn.ConvEmbedder` and
      :class:`~hemoe_sk.nn.DeepMoEEmbedder`. With ``output="similarity"`` the
      target is the latent similarity to the chosen centre, which makes it a
      Grad-CAM on the latent space in the spirit of Grad-LAM (Bartler et
      al., EUSIPCO 2020); Grad-LAM's decoder-based weighting is not
      implemented.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier, \
            HierarchicalEmbeddingMoERegressor or Pipeline
        Fitted; a pipeline's first steps transform ``X`` and the
        attributions are those of the transformed features.
    X : array-like of shape (n_samples, n_features)
        Samples to explain.
    node : int, default=0
        Id of an inner node (one that routes). Every sample is explained at
        that node, whether or not hard routing brings it there.
    target : None, int or array-like of int, default=None
        Cluster (child position, ``0 .. n_children - 1``) to explain;
        ``None`` takes the one each sample is routed to at ``node``.
    output : {"proba", "similarity"}, default="proba"
        What is differentiated, as in :func:`routing_module`.
    method : {"auto", "integrated_gradients", "gradcam"}, default="auto"
        ``"auto"`` is ``"gradcam"`` when the embedder has convolutions and
        an ``image_shape``, else ``"integrated_gradients"``.
    layer : torch.nn.Module or None, default=None
        The convolution for Grad-CAM; ``None`` takes the embedder's last
        ``nn.Conv2d``.
    baseline : None, float or array-like of shape (n_features,), default=None
        Integrated gradients' reference input; ``None`` is all zeros (black
        images; the mean for standardised features).
    n_steps : int, default=32
        Integration steps of integrated gradients.

    Returns
    -------
    attributions : ndarray of shape (n_samples, n_features)
        The input's shape. Grad-CAM maps are repeated over the image's
        channels. Deterministic: the networks run in eval mode.

    Raises
    ------
    ImportError
        If captum is not installed (``pip install hemoe_sk[explain]``).
    ValueError
        For a node that does not exist or is a leaf, a target out of range,
        or Grad-CAM on an embedder without convolutions.
    TypeError
        If the node's router has no differentiable form.

    Examples
    --------
    %(fitted_tree_example)s
    >>> from hemoe_sk.inspection import route_attributions
    >>> route_attributions(clf, X[:3], node=0).shape
    (3, 2)
    """
    if method not in ("auto", "integrated_gradients", "gradcam"):
        raise ValueError(
            "method must be 'auto', 'integrated_gradients' or 'gradcam', got "
            f"{method!r}."
        )
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
    est, X = resolve(estimator, X)
    node_obj = inner_node(est.tree_, node)
    model = routing_module(est, node_obj.node_id, output=output)
    n_clusters = model.n_clusters
    embedder = model.embedder
    convs = [m for m in embedder.modules() if isinstance(m, nn.Conv2d)]
    shape = _image_shape(embedder)
    if method == "auto":
        method = "gradcam" if convs and shape is not None else "integrated_gradients"
    if method == "gradcam":
        if layer is None and not convs:
            raise ValueError(
                f"method='gradcam' needs a convolutional embedder; node "
                f"{node_obj.node_id}'s is {type(embedder).__name__}, without nn.Conv2d "
                "layers. Use method='integrated_gradients'."
            )
        if shape is None or len(shape) != 3 or math.prod(shape) != X.shape[1]:
            raise ValueError(
                f"method='gradcam' needs the embedder's image_shape (channels, "
                f"height, width) matching the {X.shape[1]} features; "
                f"{type(embedder).__name__} has image_shape={shape}."
            )
    if target is None:
        target = node_obj.router.predict(embed(node_obj.embedder, X))
    target = np.broadcast_to(np.asarray(target), (len(X),))
    if not np.issubdtype(target.dtype, np.integer) or (
        len(target) and (target.min() < 0 or target.max() >= n_clusters)
    ):
        raise ValueError(
            f"target must hold cluster indices in 0..{n_clusters - 1} (node "
            f"{node_obj.node_id} has {n_clusters} children), got {target!r}."
        )
    IntegratedGradients, LayerGradCam, LayerAttribution = _import_captum()
    device = next(embedder.parameters()).device
    x = torch.as_tensor(X, dtype=torch.float32, device=device)
    t = torch.as_tensor(target.astype(np.int64), device=device)
    with _evaluating(model):
        if method == "integrated_gradients":
            base = torch.zeros_like(x) if baseline is None else torch.as_tensor(
                np.broadcast_to(np.asarray(baseline, dtype=np.float32), X.shape).copy(),
                device=device,
            )
            attr = IntegratedGradients(model).attribute(
                x, baselines=base, target=t, n_steps=int(n_steps)
            )
        else:
            cam = LayerGradCam(model, layer if layer is not None else convs[-1])
            maps = cam.attribute(x, target=t, relu_attributions=True)
            maps = LayerAttribution.interpolate(maps, shape[1:], "bilinear")
            attr = maps.expand(len(X), shape[0], *shape[1:]).reshape(len(X), -1)
    return attr.detach().double().cpu().numpy()
