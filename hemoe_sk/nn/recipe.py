"""The default network for tabular rows and the rules that size its training.

:class:`TabularEmbedder` is hemoe_sk's default ``embedder``: robust input
scaling fitted on the training rows (per-feature median and inter-quartile
range, then RealMLP's smooth clipping; binary columns are left alone),
periodic numerical-feature embeddings (PLR, after Gorishniy, Rubachev and
Babenko, "On Embeddings for Numerical Features in Tabular Deep Learning",
NeurIPS 2022) and an MLP whose last hidden layer is the embedding.

The training side of the recipe (AdamW with weight decay, linear warm-up then
cosine decay of the learning rate, early stopping on held-out rows restoring
the best epoch, a batch size that grows with the data) lives in the skorch
nets of :mod:`hemoe_sk.nn.build`; the sizing rules are here:
:func:`auto_batch_size` and :func:`auto_hidden_dims`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .modules import mlp

__all__ = [
    "PeriodicEmbedding",
    "RobustScaling",
    "TabularEmbedder",
    "auto_batch_size",
    "auto_hidden_dims",
    "binary_columns",
    "warmup_cosine",
]

#: PLR embeddings are used (``numerical_embedding="auto"``) when a table has at
#: most this many numerical features; wider rows (flat pixels) go to the MLP
#: as scaled values.
MAX_EMBEDDED_FEATURES = 128


def auto_batch_size(n_rows):
    """Training batch size for ``n_rows`` rows: the power of two nearest to
    ``sqrt(n_rows)``, between 32 and 1024.

    Examples
    --------
    >>> [auto_batch_size(n) for n in (300, 5_000, 56_000, 10**7)]
    [32, 64, 256, 1024]
    """
    n_rows = max(int(n_rows), 1)
    return int(min(1024, max(32, 2 ** round(math.log2(math.sqrt(n_rows))))))


def auto_hidden_dims(n_rows):
    """Hidden layers of :class:`TabularEmbedder` for ``n_rows`` training rows.

    Width: the power of two nearest to ``sqrt(n_rows)``, between 64 and 256;
    three layers from 20,000 rows, else two.

    Examples
    --------
    >>> [auto_hidden_dims(n) for n in (300, 5_000, 70_000)]
    [(64, 64), (64, 64), (256, 256, 256)]
    """
    n_rows = max(int(n_rows), 1)
    width = int(min(256, max(64, 2 ** round(math.log2(math.sqrt(n_rows))))))
    return (width,) * (3 if n_rows >= 20_000 else 2)


def binary_columns(X):
    """Mask of the columns of ``X`` with at most two distinct values.

    Examples
    --------
    >>> binary_columns(np.array([[0., 1.5, 3.], [1., 2.5, 3.], [0., 3.5, 3.]])).tolist()
    [True, False, True]
    """
    X = np.asarray(X)
    binary = np.ones(X.shape[1], dtype=bool)
    if len(X) == 0:
        return ~binary
    for start in range(0, X.shape[1], 64):  # column blocks: bounded memory
        block = X[:, start:start + 64]
        other = block != block[0]
        lo = np.where(other, block, np.inf).min(axis=0)
        hi = np.where(other, block, -np.inf).max(axis=0)
        # at most one value besides the first row's: min == max of the others
        binary[start:start + 64] = ~(lo < hi)
    return binary


def _weighted_quantiles(x, q, weight=None):
    """Quantiles ``q`` of every column of ``x`` (the inverse of the empirical
    distribution function, numpy's ``"inverted_cdf"``), weighted by
    ``weight``: an integer weight equals repeating the row."""
    if weight is None:
        return np.quantile(x, q, axis=0, method="inverted_cdf")
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0)
    cw = np.cumsum(weight[order], axis=0)
    total = cw[-1]
    out = np.empty((len(q), x.shape[1]))
    for i, qi in enumerate(q):
        # the smallest value whose cumulative weight reaches qi * total
        idx = (cw < qi * total - 1e-9 * total).sum(axis=0)
        idx = np.minimum(idx, len(x) - 1)
        out[i] = xs[idx, np.arange(x.shape[1])]
    return out


class RobustScaling(nn.Module):
    """Per-feature robust scaling with smooth clipping, fitted on training rows.

    ``z = (x - median) / IQR``, then ``z / sqrt(1 + (z / 3)^2)`` (RealMLP's
    smooth clipping: linear near 0, bounded by 3). A column whose quartiles
    coincide is scaled by half its range instead; binary columns (at most two
    distinct values) are mapped to 0/1 and not clipped. Until :meth:`fit` is
    called the scaling is the identity.

    Parameters
    ----------
    n_features : int
    """

    def __init__(self, n_features):
        super().__init__()
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.register_buffer("clip", torch.zeros(n_features, dtype=torch.bool))

    @torch.no_grad()
    def fit(self, X, weight=None):
        """Fit the scaling on the rows ``X`` (weighted by ``weight``)."""
        X = np.asarray(X, dtype=np.float64)
        if weight is not None:
            keep = np.asarray(weight) > 0
            X, weight = X[keep], np.asarray(weight, dtype=np.float64)[keep]
        binary = binary_columns(X)
        lo, hi = X.min(axis=0), X.max(axis=0)
        q25, q50, q75 = _weighted_quantiles(X, [0.25, 0.5, 0.75], weight)
        iqr = q75 - q25
        half_range = (hi - lo) / 2
        scale = np.where(iqr > 0, iqr, np.where(half_range > 0, half_range, 1.0))
        center = q50
        # Binary columns: lo -> 0, hi -> 1 (a constant column: 0), no clipping.
        center = np.where(binary, lo, center)
        scale = np.where(binary, np.where(hi > lo, hi - lo, 1.0), scale)
        device = self.center.device
        self.center.copy_(torch.as_tensor(center, dtype=torch.float32, device=device))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32, device=device))
        self.clip.copy_(torch.as_tensor(~binary, device=device))
        return self

    def forward(self, x):
        z = (x - self.center) / self.scale
        return torch.where(self.clip, z * torch.rsqrt(1 + (z / 3) ** 2), z)


class PeriodicEmbedding(nn.Module):
    """PLR embedding of numerical features (Gorishniy et al., 2022).

    Every feature ``x_j`` becomes ``ReLU(W_j [cos(2 pi c_j x_j), sin(2 pi c_j
    x_j)] + b_j)``, a ``d_embedding`` vector, with ``n_frequencies`` trainable
    frequencies ``c_j`` drawn from ``N(0, frequency_scale^2)`` and a linear
    layer of its own per feature. The output is the features' embeddings,
    concatenated: shape ``(batch, n_features * d_embedding)``.

    Parameters
    ----------
    n_features : int
    d_embedding : int, default=16
    n_frequencies : int, default=16
    frequency_scale : float, default=0.03
        Standard deviation of the initial frequencies (on robustly scaled
        inputs).

    Examples
    --------
    >>> emb = PeriodicEmbedding(3, d_embedding=4, n_frequencies=5)
    >>> tuple(emb(torch.zeros(2, 3)).shape)
    (2, 12)
    """

    def __init__(self, n_features, d_embedding=16, n_frequencies=16,
                 frequency_scale=0.03):
        super().__init__()
        self.frequencies = nn.Parameter(
            torch.randn(n_features, n_frequencies) * float(frequency_scale)
        )
        bound = 1 / math.sqrt(2 * n_frequencies)
        self.weight = nn.Parameter(
            torch.empty(n_features, 2 * n_frequencies, d_embedding).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(
            torch.empty(n_features, d_embedding).uniform_(-bound, bound)
        )

    def forward(self, x):
        v = 2 * math.pi * self.frequencies * x[..., None]
        v = torch.cat([torch.cos(v), torch.sin(v)], dim=-1)
        out = torch.einsum("bnf,nfd->bnd", v, self.weight) + self.bias
        return torch.relu(out).flatten(1)


class TabularEmbedder(nn.Module):
    """hemoe_sk's default network for tabular rows.

    Robust scaling (:class:`RobustScaling`, fitted by the training net on
    its training rows), PLR embeddings (:class:`PeriodicEmbedding`) of the
    numerical features, binary features passed as 0/1, then an MLP of
    ``Linear -> ReLU -> Dropout`` blocks whose last hidden layer is the
    embedding (:meth:`embed`), and a linear output layer.

    Parameters
    ----------
    n_features : int
        Number of input features.
    n_classes : int
        Number of output logits.
    hidden_dims : tuple of int or None, default=None
        Hidden layer sizes. ``None``: :func:`auto_hidden_dims` of the training
        rows, filled in by the estimator (``(128, 128)`` when built alone).
    dropout : float, default=0.1
    numerical_features : tuple of int or None, default=None
        Columns that get PLR embeddings. ``None``: every column, unless the
        estimator fills in the non-binary columns of its training data.
    numerical_embedding : {"auto", "plr", "none"}, default="auto"
        ``"auto"``: PLR when there are at most 128 numerical features, else
        the scaled values go to the MLP directly (e.g. flat pixels).
    d_embedding : int, default=16
    n_frequencies : int, default=16
    frequency_scale : float, default=0.03
    linear_skip : bool, default=False
        Add a linear function of the scaled inputs to the output (a "wide
        and deep" skip).

    Examples
    --------
    >>> net = TabularEmbedder(5, 3, hidden_dims=(8,), numerical_features=(0, 1))
    >>> tuple(net(torch.zeros(4, 5)).shape), tuple(net.embed(torch.zeros(4, 5)).shape)
    ((4, 3), (4, 8))
    """

    def __init__(self, n_features, n_classes, hidden_dims=None, dropout=0.1,
                 numerical_features=None, numerical_embedding="auto", d_embedding=16,
                 n_frequencies=16, frequency_scale=0.03, linear_skip=False):
        super().__init__()
        n_features = int(n_features)
        hidden_dims = (128, 128) if hidden_dims is None else tuple(hidden_dims)
        if not hidden_dims:
            raise ValueError("TabularEmbedder needs at least one hidden layer.")
        numerical = (
            np.arange(n_features) if numerical_features is None
            else np.asarray(numerical_features, dtype=np.int64).reshape(-1)
        )
        if numerical.size and (numerical.min() < 0 or numerical.max() >= n_features):
            raise ValueError(
                f"numerical_features must be column indices below n_features="
                f"{n_features}; got {tuple(numerical.tolist())}."
            )
        if numerical_embedding not in ("auto", "plr", "none"):
            raise ValueError(
                "numerical_embedding must be 'auto', 'plr' or 'none'; got "
                f"{numerical_embedding!r}."
            )
        use_plr = numerical.size > 0 and (
            numerical_embedding == "plr"
            or (numerical_embedding == "auto" and numerical.size <= MAX_EMBEDDED_FEATURES)
        )
        self.scaling = RobustScaling(n_features)
        other = np.setdiff1d(np.arange(n_features), numerical if use_plr else [])
        self.register_buffer("numerical", torch.as_tensor(
            numerical if use_plr else np.zeros(0, np.int64)))
        self.register_buffer("other", torch.as_tensor(other, dtype=torch.int64))
        self.plr = (
            PeriodicEmbedding(numerical.size, d_embedding, n_frequencies, frequency_scale)
            if use_plr else None
        )
        n_in = len(other) + (numerical.size * d_embedding if use_plr else 0)
        self.body = mlp(n_in, hidden_dims, dropout)
        self.output = nn.Linear(hidden_dims[-1], n_classes)
        self.skip = nn.Linear(n_features, n_classes) if linear_skip else None

    def fit_input_scaling(self, X, weight=None):
        """Fit the robust scaling on the training rows ``X``."""
        self.scaling.fit(X, weight)
        return self

    def _features(self, z):
        if self.plr is None:
            return z
        return torch.cat([self.plr(z[:, self.numerical]), z[:, self.other]], dim=1)

    def embed(self, x):
        return self.body(self._features(self.scaling(x)))

    def forward(self, x):
        z = self.scaling(x)
        out = self.output(self.body(self._features(z)))
        return out if self.skip is None else out + self.skip(z)

    @classmethod
    def data_defaults(cls, X):
        """Module arguments derived from the training rows ``X``: the hidden
        layers (:func:`auto_hidden_dims`) and the non-binary columns."""
        return {
            "hidden_dims": auto_hidden_dims(len(X)),
            "numerical_features": tuple(
                int(i) for i in np.flatnonzero(~binary_columns(X))
            ),
        }


def warmup_cosine(progress, warmup=0.05):
    """Learning-rate factor at ``progress`` in [0, 1] of training: linear
    warm-up over the first ``warmup`` share, then cosine decay to 0.

    Examples
    --------
    >>> [round(warmup_cosine(p, 0.1), 3) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    [0.1, 0.5, 1.0, 0.5, 0.0]
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.1)
    span = 1.0 - warmup
    t = (progress - warmup) / span if span > 0 else 1.0
    return 0.5 * (1 + math.cos(math.pi * t))
