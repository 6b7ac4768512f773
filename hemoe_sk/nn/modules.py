"""Torch modules used by hemoe_sk.

Every classifier module here returns *logits* from ``forward`` and offers an
``embed`` method that returns the representation just before the output
layer. Modules are passed to estimators as classes and configured with
keyword arguments (the skorch convention); ``n_features`` and ``n_classes``
are filled in by the estimator at fit time.
"""

from __future__ import annotations

import math

from torch import nn

from .._docstrings import fill_doc

__all__ = [
    "AutoEncoder",
    "ConvEmbedder",
    "LinearHead",
    "MLPEmbedder",
    "check_image_shape",
    "mlp",
]


def mlp(n_in, hidden_dims, dropout, *, last_activation=True):
    """``Linear -> ReLU [-> Dropout]`` blocks from ``n_in`` through ``hidden_dims``.

    No blocks (an identity ``nn.Sequential``) when ``hidden_dims`` is empty;
    ``last_activation=False`` leaves the last ``Linear`` bare.
    """
    layers = []
    dims = [n_in, *hidden_dims]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(hidden_dims) - 1:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPEmbedder(nn.Module):
    """Multi-layer perceptron whose last hidden layer is the embedding.

    Parameters
    ----------
    n_features : int
        Number of input features.
    n_classes : int
        Number of output logits.
    hidden_dims : tuple of int, default=(128, 64)
        Sizes of the hidden layers; the last one is the embedding size.
    dropout : float, default=0.1
        Dropout after every hidden activation.
    """

    def __init__(self, n_features, n_classes, hidden_dims=(128, 64), dropout=0.1):
        super().__init__()
        hidden_dims = tuple(hidden_dims)
        if not hidden_dims:
            raise ValueError("MLPEmbedder needs at least one hidden layer.")
        self.body = mlp(n_features, hidden_dims, dropout)
        self.output = nn.Linear(hidden_dims[-1], n_classes)

    def embed(self, x):
        return self.body(x)

    def forward(self, x):
        return self.output(self.body(x))


@fill_doc
class ConvEmbedder(nn.Module):
    """Small convolutional network for images given as flat pixel rows.

    The embedder for pixel data (give ``image_shape``, e.g. ``(1, 28, 28)``
    for Fashion-MNIST): one block per entry of ``channels``, each a 3x3
    convolution, batch norm and ReLU, then a 2x2 max pool while the map is at
    least 4 pixels wide (so the last map keeps at least 2x2 pixels); the last
    map is flattened into a dense embedding of ``embedding_dim`` units (ReLU),
    and a linear layer gives the logits after dropout. With the defaults on
    28x28 grey images it has about 93,000 parameters (28 -> 14 -> 7 -> 3
    pixels, 64 x 3 x 3 values into the dense layer).

    Batch norm uses its running statistics in eval mode, so a prediction
    does not depend on the other rows of its batch.

    Parameters
    ----------
    %(image_module_inputs)s
    channels : tuple of int, default=(32, 64, 64)
        Output channels of the convolution blocks (3x3 convolution, batch
        norm, ReLU, 2x2 max pool while the map is at least 4 pixels wide).
    embedding_dim : int, default=64
        Size of the dense embedding after the convolutions.
    dropout : float, default=0.1
        Dropout before the output layer.
    batch_norm : bool, default=True
        Batch norm after every convolution (``False``: a bias instead, the
        0.3 blocks without batch norm).

    Examples
    --------
    >>> import torch
    >>> net = ConvEmbedder(784, 10, image_shape=(1, 28, 28)).eval()
    >>> net(torch.zeros(5, 784)).shape, net.embed(torch.zeros(5, 784)).shape
    (torch.Size([5, 10]), torch.Size([5, 64]))
    """

    def __init__(
        self,
        n_features,
        n_classes,
        image_shape=(1, 8, 8),
        channels=(32, 64, 64),
        embedding_dim=64,
        dropout=0.1,
        batch_norm=True,
    ):
        super().__init__()
        image_shape = check_image_shape(image_shape, n_features)
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(
                f"channels={channels} must be a non-empty tuple of positive ints."
            )
        self.image_shape = image_shape
        c, h, w = image_shape
        blocks = []
        for out_c in channels:
            blocks.append(
                nn.Conv2d(c, out_c, kernel_size=3, padding=1, bias=not batch_norm)
            )
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_c))
            blocks.append(nn.ReLU())
            if min(h, w) >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out_c
        self.features = nn.Sequential(*blocks)
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, embedding_dim), nn.ReLU()
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(embedding_dim, n_classes)

    def embed(self, x):
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.dense(self.features(x))

    def forward(self, x):
        return self.output(self.dropout(self.embed(x)))


def check_image_shape(image_shape, n_features):
    """``image_shape`` as a tuple ``(channels, height, width)`` whose product
    is ``n_features``, or a ValueError.

    Examples
    --------
    >>> check_image_shape([1, 8, 8], 64)
    (1, 8, 8)
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or math.prod(image_shape) != n_features:
        raise ValueError(
            f"image_shape={image_shape} does not match n_features={n_features}: "
            "expected (channels, height, width) with product n_features."
        )
    return image_shape


class AutoEncoder(nn.Module):
    """Symmetric fully connected autoencoder.

    ``forward`` returns the reconstruction, ``encode`` the code.

    Parameters
    ----------
    n_features : int
        Input size.
    hidden_dims : tuple of int
        Encoder hidden sizes; the decoder mirrors them.
    embedding_dim : int
        Code size (linear, no activation, as in DEC).
    """

    def __init__(self, n_features, hidden_dims=(256, 128), embedding_dim=10):
        super().__init__()
        hidden_dims = tuple(hidden_dims)
        self.encoder = nn.Sequential(
            mlp(n_features, hidden_dims, 0.0),
            nn.Linear(hidden_dims[-1] if hidden_dims else n_features, embedding_dim),
        )
        self.decoder = nn.Sequential(
            mlp(embedding_dim, hidden_dims[::-1], 0.0),
            nn.Linear(hidden_dims[0] if hidden_dims else embedding_dim, n_features),
        )

    def encode(self, x):
        return self.encoder(x)

    #: The embedding of an autoencoder is its code.
    embed = encode

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class LinearHead(nn.Module):
    """A linear (softmax regression) head on fixed embeddings."""

    def __init__(self, n_features, n_classes):
        super().__init__()
        self.output = nn.Linear(n_features, n_classes)

    def forward(self, x):
        return self.output(x)

