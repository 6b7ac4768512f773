"""DeepMoE: a convolutional network gated channel-wise by a shallow embedding.

Wang, Yu, Dunlap, Ma, Wang, Mirhoseini, Darrell and Gonzalez, "Deep Mixture
of Experts via Shallow Embedding", UAI 2019 (arXiv:1806.01531).

Every output channel of every convolution of the base network is an
"expert". A shallow convolutional *embedding network* maps the input to a
small vector :math:`e(x)`; one linear gating head per convolution turns it
into sparse, non-negative channel gates :math:`g^l(x) = \\mathrm{ReLU}(W^l
e(x) + b^l)` that multiply that convolution's output channels. Channels whose
gate is exactly zero are switched off for that sample. Training minimises

.. math::

    L = \\mathrm{CE}(f(x), y)
        + \\lambda \\frac{1}{B} \\sum_{b=1}^{B} \\sum_l \\lVert g^l(x_b) \\rVert_1
        + \\mu \\, \\mathrm{CE}(W_e e(x), y),

the last term being a linear classifier on the shallow embedding that keeps
the embedding informative about the class. The first term is the skorch
criterion; :meth:`DeepMoEEmbedder.auxiliary_loss` returns the other two, and
:class:`~hemoe_sk.nn.build.HemoeNeuralNetClassifier` adds them during
training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._docstrings import fill_doc
from .inference import batched
from .modules import check_image_shape

__all__ = ["DeepMoEEmbedder", "gate_sparsity"]


@fill_doc
class DeepMoEEmbedder(nn.Module):
    """DeepMoE classifier module for images given as flat pixel rows.

    ``forward`` returns logits; ``embed`` returns the dense representation
    before the output layer, so the module can serve as the ``embedder`` of
    hemoe_sk's tree estimators and be read by :func:`hemoe_sk.nn.inference.embed`.

    Parameters
    ----------
    %(image_module_inputs)s
    channels : tuple of int, default=(32, 64)
        Output channels of the gated convolution blocks of the base network
        (3x3 conv, channel gates, ReLU, 2x2 max pool while the map is at least
        2 pixels wide). Every output channel is one expert.
    embedding_channels : tuple of int, default=(16,)
        Output channels of the shallow embedding network's convolutions (3x3
        conv with stride 2, ReLU), followed by global average pooling.
    embedding_dim : int, default=32
        Size of the shallow embedding :math:`e(x)` that drives the gates.
    hidden_dim : int, default=64
        Size of the dense representation returned by :meth:`embed`.
    dropout : float, default=0.1
        Dropout before the output layer.
    lam : float, default=3e-3
        Weight :math:`\\lambda` of the L1 penalty on the gates.
    mu : float, default=0.1
        Weight :math:`\\mu` of the cross-entropy of the linear classifier on
        the shallow embedding.
    gate_bias : float, default=1.0
        Initial bias of the gating heads; a positive value starts with most
        channels open and lets the L1 penalty close them.

    Attributes
    ----------
    last_gate_sparsity_ : float
        Fraction of gate values exactly zero in the last ``forward`` batch
        (``nan`` before the first call).

    Notes
    -----
    The L1 term is :math:`\\frac{1}{B}\\sum_b \\sum_l \\sum_c |g^l_c(x_b)|`:
    the element-wise absolute values of *all* gates of *all* gated layers,
    summed per sample and averaged over the batch (not a matrix norm, and not
    divided by the number of channels).

    A gate whose pre-activation stays negative for every sample receives no
    gradient (ReLU) and stays closed: with too large a ``lam`` (about ``2e-2``
    and above on 8x8 digits) *all* gates close for good and the network
    predicts a constant. Watch :func:`gate_sparsity`.

    Examples
    --------
    >>> import torch
    >>> from hemoe_sk.nn.deepmoe import DeepMoEEmbedder
    >>> module = DeepMoEEmbedder(n_features=64, n_classes=10)
    >>> x = torch.rand(5, 64)
    >>> module(x).shape, module.embed(x).shape
    (torch.Size([5, 10]), torch.Size([5, 64]))
    >>> [g.shape[1] for g in module.gates(x)]
    [32, 64]
    """

    def __init__(
        self,
        n_features,
        n_classes,
        image_shape=(1, 8, 8),
        channels=(32, 64),
        embedding_channels=(16,),
        embedding_dim=32,
        hidden_dim=64,
        dropout=0.1,
        lam=3e-3,
        mu=0.1,
        gate_bias=1.0,
    ):
        super().__init__()
        image_shape = check_image_shape(image_shape, n_features)
        channels = tuple(int(c) for c in channels)
        embedding_channels = tuple(int(c) for c in embedding_channels)
        if not channels:
            raise ValueError("DeepMoEEmbedder needs at least one gated convolution.")
        self.image_shape = image_shape
        self.lam = float(lam)
        self.mu = float(mu)

        # Shallow embedding network: strided convolutions + global pooling.
        c = image_shape[0]
        layers = []
        for out_c in embedding_channels:
            layers += [nn.Conv2d(c, out_c, 3, stride=2, padding=1), nn.ReLU()]
            c = out_c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, embedding_dim)]
        layers.append(nn.ReLU())
        self.embedding = nn.Sequential(*layers)
        self.embedding_head = nn.Linear(embedding_dim, n_classes)

        # Base network: convolutions whose output channels are gated.
        c, h, w = image_shape
        self.convs = nn.ModuleList()
        self.gate_heads = nn.ModuleList()
        self._pool = []
        for out_c in channels:
            self.convs.append(nn.Conv2d(c, out_c, 3, padding=1))
            head = nn.Linear(embedding_dim, out_c)
            nn.init.constant_(head.bias, float(gate_bias))
            self.gate_heads.append(head)
            pool = min(h, w) >= 2
            self._pool.append(pool)
            if pool:
                h, w = h // 2, w // 2
            c = out_c
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden_dim), nn.ReLU()
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, n_classes)
        self._cache = {}
        self.last_gate_sparsity_ = float("nan")

    # -- pieces -----------------------------------------------------------
    def _image(self, x):
        return x.reshape(x.shape[0], *self.image_shape)

    def shallow_embedding(self, x):
        """The shallow embedding :math:`e(x)` that drives the gates."""
        return self.embedding(self._image(x))

    def gates(self, x):
        """Per-layer channel gates, a list of ``(n, channels[l])`` tensors."""
        e = self.shallow_embedding(x)
        return [F.relu(head(e)) for head in self.gate_heads]

    def _run(self, x):
        img = self._image(x)
        e = self.embedding(img)
        gates = [F.relu(head(e)) for head in self.gate_heads]
        z = img
        for conv, g, pool in zip(self.convs, gates, self._pool, strict=True):
            # Gates are non-negative, so gating before or after the ReLU is
            # the same; gated-off channels are exactly zero.
            z = F.relu(conv(z) * g[:, :, None, None])
            if pool:
                z = F.max_pool2d(z, 2)
        h = self.dense(z)
        self._cache = {"embedding": e, "gates": gates}
        with torch.no_grad():
            n_zero = sum(int((g == 0).sum()) for g in gates)
            n_all = sum(g.numel() for g in gates)
            self.last_gate_sparsity_ = n_zero / n_all if n_all else float("nan")
        return h

    # -- module contract --------------------------------------------------
    def embed(self, x):
        """Representation before the output layer, ``(n, hidden_dim)``."""
        return self._run(x)

    def forward(self, x):
        return self.output(self.dropout(self._run(x)))

    def auxiliary_loss(self, y_true):
        """DeepMoE's extra training terms for the last ``forward`` batch.

        Returns ``lam * mean_b sum_{l,c} |g^l_c(x_b)| + mu * CE(W_e e(x), y)``.
        """
        gates = self._cache.get("gates")
        if gates is None:
            raise RuntimeError("auxiliary_loss() needs a forward() call first.")
        l1 = sum(g.abs().sum(dim=1) for g in gates).mean()
        emb_logits = self.embedding_head(self._cache["embedding"])
        ce = F.cross_entropy(emb_logits, y_true.long())
        return self.lam * l1 + self.mu * ce

    def __getstate__(self):
        # Cached tensors belong to the last batch's autograd graph: never
        # pickle or copy them.
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


def gate_sparsity(net_or_module, X, batch_size=4096, per_layer=False):
    """Fraction of DeepMoE channel gates that are exactly zero on ``X``.

    Parameters
    ----------
    net_or_module : DeepMoEEmbedder or skorch net wrapping one
        The fitted model.
    X : array-like of shape (n_samples, n_features)
        Data, as flat pixel rows.
    batch_size : int, default=4096
        Rows per evaluation batch.
    per_layer : bool, default=False
        Also return the fraction for each gated layer.

    Returns
    -------
    sparsity : float
        Zero gates over all gates of all samples and layers.
    per_layer : ndarray of shape (n_layers,)
        Only when ``per_layer=True``.
    """
    module = getattr(net_or_module, "module_", net_or_module)
    if not hasattr(module, "gates"):
        raise TypeError(f"{type(module).__name__} has no channel gates.")
    if len(X) == 0:
        raise ValueError("gate_sparsity needs at least one sample.")

    def zeros_per_layer(xb):
        return torch.stack(
            [(g == 0).sum(dim=1) for g in module.gates(xb)], dim=1
        ).float()

    # Only (n_samples, n_layers) counts are kept, never the gates themselves.
    counts = batched(module, zeros_per_layer, X, batch_size)
    widths = np.array([head.out_features for head in module.gate_heads])
    zeros = counts.sum(axis=0, dtype=np.float64)
    totals = widths * float(len(X))
    overall = float(zeros.sum() / totals.sum())
    if per_layer:
        return overall, zeros / totals
    return overall
