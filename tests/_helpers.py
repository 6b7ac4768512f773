"""Helpers shared by several test files (not tests themselves)."""

import numpy as np
import torch
from skorch import NeuralNetRegressor

from hemoe_sk.nn import AutoEncoder


class DivergingAutoEncoder(AutoEncoder):
    """An autoencoder whose codes are NaN in its first ``budget`` training
    steps: a stand-in for a training that diverges.

    Only steps that train (training mode, gradients on) count; the codes a
    fit reads for its k-means initialisation or its targets are finite. The
    budget is the class's, so the deep copies a clusterer makes of the
    autoencoder it is given share it.
    """

    budget = 0

    def encode(self, x):
        z = super().encode(x)
        if self.training and torch.is_grad_enabled() and DivergingAutoEncoder.budget:
            DivergingAutoEncoder.budget -= 1
            return z * float("nan")
        return z


def diverging_autoencoder(X, budget, hidden_dims=(8,), embedding_dim=2):
    """A fitted autoencoder net (for ``fit(X, autoencoder=...)`` of DEC or
    MixAE) whose next ``budget`` training steps diverge.

    Pass ``budget=1`` for a training that recovers on the retry, a large one
    for a training that never does.
    """
    DivergingAutoEncoder.budget = 0
    net = NeuralNetRegressor(
        DivergingAutoEncoder,
        module__n_features=X.shape[1],
        module__hidden_dims=hidden_dims,
        module__embedding_dim=embedding_dim,
        criterion=torch.nn.MSELoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=2,
        train_split=None,
        verbose=0,
    )
    X = np.asarray(X, dtype=np.float32)
    net.fit(X, X)
    DivergingAutoEncoder.budget = int(budget)
    return net
