"""Helpers shared by several test files (not tests themselves)."""

import numpy as np
import torch
from skorch import NeuralNetRegressor

from hemoe_sk.nn import AutoEncoder, MLPEmbedder

#: The network and training of 0.3's defaults (a plain MLP, Adam at a fixed
#: batch size and learning rate, every epoch trained, no held-out rows drawn
#: inside the nets). Tests about the tree's mechanics (what splits, what
#: routes, what is saved) on tiny data pin it, so that they do not depend on
#: the default recipe, which tests/test_recipe.py covers.
CLASSIC_NET = dict(
    embedder=MLPEmbedder,
    optimizer=torch.optim.Adam,
    batch_size=64,
    early_stopping=0.0,
    lr_schedule="constant",
)


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


def weighted_vs_repeated(estimator, method):
    """Fit ``estimator`` on the data of scikit-learn's
    ``check_sample_weight_equivalence_on_dense_data`` twice, with integer
    ``sample_weight`` and with the rows repeated, and return both outputs of
    ``method`` on the unweighted rows.

    The data, weights and shuffling are the check's own (15 rows of 30
    uniform features, 3 classes, weights 0 to 4). The check compares with
    ``rtol=1e-7``, a tolerance float32 training meets or misses by the
    rounding of the machine's kernels (the weighted mean and the mean over
    repeated rows sum in different orders); tests that call this helper
    compare at a float32 tolerance instead and say which.
    """
    from sklearn.base import clone
    from sklearn.utils import shuffle

    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    sw = rng.randint(0, 5, size=15)
    X_rep, y_rep = X.repeat(sw, axis=0), y.repeat(sw)
    X_w, y_w, sw_w = shuffle(X, y, sw, random_state=0)
    repeated = clone(estimator).fit(X_rep, y_rep)
    weighted = clone(estimator).fit(X_w, y_w, sample_weight=sw_w)
    return getattr(weighted, method)(X), getattr(repeated, method)(X)
