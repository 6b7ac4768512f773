"""Joint refinement: the grown tree fine-tuned end to end as one mixture.

After the tree is grown, every expert has only seen its own cluster and no
router has ever been trained together with the experts below it. Refinement
treats the whole tree as one torch model, a hierarchical mixture of experts
(Jordan and Jacobs' HME, whose EM fits gates and experts together; BTX
fine-tunes its merged experts the same way):

.. math::

    p(y \\mid x) = \\sum_{\\ell \\in \\text{leaves}} \\Big(\\prod_{(n, c)
    \\in \\text{path}(\\ell)} q_{n, c}(x)\\Big) \\, p_\\ell(y \\mid x)

where :math:`q_{n, c}` is node :math:`n`'s soft assignment to child
:math:`c`, computed on the node network's embedding exactly as soft routing
does at prediction time. Every network in the tree (the node embedders and
the leaf experts) is trained on the mixture's negative log-likelihood over
all training rows, plus a load-balancing term per node, the KL divergence of
the batch's routing mass from the cluster proportions the node was grown
with, so that no router collapses onto one child.

Routers are differentiable where their soft assignment has a closed form in
torch (:func:`hemoe_sk.cluster.torch_routing.router_scores`: centroid
routers such as k-means, :class:`DECClusterer`, the mixture of autoencoders
and Gaussian mixtures, after no reducer, PCA or a scaler). The routers' own
parameters (centres, DEC's encoder) stay fixed, so hard routing keeps
following the same partition of the (now refined) embedding space. Other
routers give constant routing weights; only the experts below them learn
then.
"""

from __future__ import annotations

import numpy as np
import torch

from .cluster.torch_routing import router_scores
from .nn.inference import _embedding_fn
from .nn.training import torch_seed

__all__ = ["refine_tree", "torch_router"]

#: Rows whose path weight falls below this are not sent down a branch.
_MIN_WEIGHT = 1e-4


def torch_router(router, device="cpu"):
    """A differentiable ``z -> q`` equal to ``router.predict_proba(z)``, or
    ``None`` where the router has no closed form in torch (see
    :func:`hemoe_sk.cluster.torch_routing.router_scores`).

    Parameters
    ----------
    router : hemoe_sk.node.Router
    device : str

    Returns
    -------
    callable or None
    """
    try:
        scores = router_scores(router, device)
    except TypeError:
        return None
    return lambda z: torch.softmax(scores(z), dim=1).float()


class _NodeFn:
    """What refinement needs of one node, in torch."""

    def __init__(self, node, device):
        self.node = node
        module = node.embedder.module_
        self.embed = _embedding_fn(module)
        self.router = None if node.is_leaf else torch_router(node.router, device)
        expert = node.classifier
        self.leaf_module = None
        if node.is_leaf and getattr(expert, "net", None) is not None:
            self.leaf_module = expert.net.module_
        elif node.is_leaf and hasattr(expert, "head"):
            self.leaf_module = expert.head.module_
        self.target = None  # an inner node's cluster proportions, set by refine_tree


def _modules_of(fns):
    mods = []
    for fn in fns:
        for m in (fn.node.embedder.module_, fn.leaf_module):
            if m is not None and all(m is not other for other in mods):
                mods.append(m)
    return mods


def refine_tree(tree, X, y, *, epochs, lr, batch_size, balance, seed, device="cpu",
                optimizer=torch.optim.Adam, sample_weight=None):
    """Fine-tune every network of ``tree`` jointly on ``(X, y)``, in place.

    Parameters
    ----------
    tree : hemoe_sk.tree.HierarchyTree
        A tree with more than one leaf.
    X : ndarray of shape (n_samples, n_features), float32
    y : ndarray of shape (n_samples,), int64 encoded labels
    epochs : int
    lr : float
    batch_size : int
    balance : float
        Weight of the load-balancing term.
    seed : int
        Seeds batch order and dropout; the global RNG is restored.
    device : str
    optimizer : torch optimizer class
    sample_weight : ndarray of shape (n_samples,) or None
        Positive row weights: a batch's negative log-likelihood is their
        weighted mean (the balance term is not weighted). ``None``: the plain
        mean.

    Returns
    -------
    list of float
        The mean training loss of every epoch.
    """
    nodes = tree.nodes
    fns = [_NodeFn(node, device) for node in nodes]
    for fn in fns:
        if not fn.node.is_leaf:
            sizes = np.array([nodes[c].n_samples for c in fn.node.children], float)
            fn.target = torch.as_tensor(sizes / sizes.sum(), dtype=torch.float32,
                                        device=device)
    modules = _modules_of(fns)
    # Routers' own modules (DEC's autoencoder, MixAE) stay fixed.
    frozen = []
    for node in nodes:
        if node.is_leaf:
            continue
        # A PairRouter wraps the node's router.
        clusterer = getattr(node.router, "router", node.router).clusterer
        for owner in (getattr(clusterer, "autoencoder_", None), clusterer):
            module = getattr(owner, "module_", None)
            if isinstance(module, torch.nn.Module):
                for p in module.parameters():
                    if p.requires_grad:
                        p.requires_grad_(False)
                        frozen.append(p)
                module.eval()
    params = []
    seen = set()
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    opt = optimizer(params, lr=lr)
    n_classes = tree.n_classes
    rng = np.random.RandomState(seed)
    losses = []
    try:
        for m in modules:
            m.train()
        with torch_seed(seed, device):
            for _ in range(int(epochs)):
                order = rng.permutation(len(X))
                total, count = 0.0, 0
                for start in range(0, len(order), batch_size):
                    rows = np.sort(order[start:start + batch_size])
                    xb = torch.as_tensor(np.asarray(X[rows], dtype=np.float32),
                                         device=device)
                    yb = torch.as_tensor(y[rows], device=device)
                    proba, balance_loss = _mixture(fns, nodes, xb, n_classes, device)
                    picked = proba.gather(1, yb[:, None]).squeeze(1)
                    nll = -torch.log(picked.clamp_min(1e-12))
                    if sample_weight is None:
                        loss = nll.mean()
                    else:
                        wb = torch.as_tensor(sample_weight[rows], dtype=nll.dtype,
                                             device=device)
                        loss = (nll * wb).sum() / wb.sum()
                    if balance > 0 and balance_loss is not None:
                        loss = loss + balance * balance_loss
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(rows)
                    count += len(rows)
                losses.append(total / max(count, 1))
    finally:
        for m in modules:
            m.eval()
        for p in frozen:
            p.requires_grad_(True)
    return losses


def _mixture(fns, nodes, xb, n_classes, device):
    """Soft-routed class probabilities of a batch, and the balance loss."""
    proba = torch.zeros(len(xb), n_classes, device=device)
    balance_terms = []
    stack = [(0, torch.arange(len(xb), device=device),
              torch.ones(len(xb), device=device))]
    while stack:
        node_id, idx, w = stack.pop()
        fn, node = fns[node_id], nodes[node_id]
        x = xb[idx]
        if node.is_leaf:
            proba = proba.index_add(0, idx, w[:, None] * _leaf_proba(fn, node, x,
                                                                     n_classes, device))
            continue
        z = fn.embed(x)
        if fn.router is not None:
            q = fn.router(z)
            mass = (w[:, None] * q).sum(0) / w.sum().clamp_min(1e-12)
            balance_terms.append(
                (fn.target * (torch.log(fn.target.clamp_min(1e-12))
                              - torch.log(mass.clamp_min(1e-12)))).sum()
            )
        else:
            q = torch.as_tensor(
                node.router.predict_proba(z.detach().cpu().numpy()),
                dtype=torch.float32, device=device,
            )
        for c, child in enumerate(node.children):
            wc = w * q[:, c]
            keep = wc.detach() > _MIN_WEIGHT
            if keep.any():
                stack.append((child, idx[keep], wc[keep]))
    total = proba.sum(1, keepdim=True).clamp_min(1e-12)
    balance_loss = torch.stack(balance_terms).sum() if balance_terms else None
    return proba / total, balance_loss


def _leaf_proba(fn, node, x, n_classes, device):
    expert = node.classifier
    if fn.leaf_module is not None and getattr(expert, "net", None) is not None:
        return torch.softmax(fn.leaf_module(x), dim=1)
    if fn.leaf_module is not None:  # a head on the node embedder's embedding
        return torch.softmax(fn.leaf_module(fn.embed(x)), dim=1)
    # constant or scikit-learn experts: fixed probabilities
    z = fn.embed(x).detach().cpu().numpy() if expert.needs_embedding else None
    rows = np.arange(len(x))
    p = expert.predict_proba(x.detach().cpu().numpy(), rows if z is None else None, z)
    return torch.as_tensor(np.asarray(p), dtype=torch.float32, device=device)
