"""Mixture of autoencoders clustering (MIXAE, Zhang et al., 2017).

:class:`MixtureOfAutoencodersClusterer` models the data as a union of
low-dimensional nonlinear manifolds, one per cluster: K small autoencoders,
each meant to reconstruct one cluster well, and a *mixture assignment network*
that reads the K codes of a sample and outputs its cluster probabilities p.
Both are trained together on the paper's objective: the reconstruction errors
weighted by p, plus the mean entropy of each sample's p (which makes the
assignments confident), minus the entropy of the batch's mean p (which keeps
the clusters balanced).

Like :class:`~hemoe_sk.cluster.DECClusterer`, it starts from one pretrained
autoencoder: ``pretrain`` fits only that autoencoder, and
``fit(X, autoencoder=...)`` starts from a given one (a DECClusterer's works
too), so a search over the number of clusters pays for pretraining once.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn
from torch.nn import functional as F

from .._docstrings import fill_doc
from ..base import check_layer_sizes, keep_state_on_error
from ..nn.inference import EVAL_BATCH_SIZE, batched, check_finite_outputs, device_of
from ..nn.modules import mlp
from ..nn.training import DivergenceError
from ._autoencoder import AutoencoderClustererMixin

__all__ = ["MixtureOfAutoencodersClusterer"]


class _MixtureOfAutoencoders(nn.Module):
    """K autoencoders and the mixture assignment network on their codes.

    ``forward`` returns the assignment logits, shape (batch, K), and the
    per-sample mean squared reconstruction error of every autoencoder, shape
    (batch, K).
    """

    def __init__(self, autoencoders, n_codes, assignment_hidden_dims):
        super().__init__()
        self.autoencoders = nn.ModuleList(autoencoders)
        k = len(self.autoencoders)
        hidden = tuple(assignment_hidden_dims)
        self.assignment = nn.Sequential(
            mlp(n_codes * k, hidden, 0.0),
            nn.Linear(hidden[-1] if hidden else n_codes * k, k),
        )

    def codes_and_errors(self, x):
        codes, errors = [], []
        for ae in self.autoencoders:
            z = ae.encode(x)
            codes.append(z)
            errors.append((ae.decode(z) - x).pow(2).mean(dim=1))
        return torch.cat(codes, dim=1), torch.stack(errors, dim=1)

    def errors(self, x):
        return self.codes_and_errors(x)[1]

    def forward(self, x):
        codes, errors = self.codes_and_errors(x)
        return self.assignment(codes), errors


def _mixae_loss(logits, errors, scale, alpha, beta):
    """The MIXAE objective of one batch; returns (loss, parts).

    ``mean_i sum_k p_ik e_ik / scale + alpha * mean_i H(p_i) - beta * H(mean_i p_i)``
    """
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    reconstruction = (p * errors).sum(dim=1).mean() / scale
    sample_entropy = -(p * log_p).sum(dim=1).mean()
    p_bar = p.mean(dim=0)
    batch_entropy = -(p_bar * torch.log(p_bar.clamp_min(1e-12))).sum()
    loss = reconstruction + alpha * sample_entropy - beta * batch_entropy
    return loss, (reconstruction, sample_entropy, batch_entropy)


@fill_doc
class MixtureOfAutoencodersClusterer(
    AutoencoderClustererMixin, ClusterMixin, BaseEstimator
):
    """Clustering with a mixture of autoencoders (MIXAE).

    Each of the ``n_clusters`` clusters has its own small fully connected
    autoencoder (:class:`hemoe_sk.nn.AutoEncoder`); a *mixture assignment
    network* takes the concatenated codes of the K autoencoders and outputs
    the soft assignment p_i of sample i. Everything is trained jointly by
    minimising, per mini-batch B (Zhang et al., 2017)::

        L = 1/|B| sum_i sum_k p_ik e_ik / s          (weighted reconstruction)
            + alpha * 1/|B| sum_i H(p_i)             (sample-wise entropy)
            - beta  * H(1/|B| sum_i p_i)             (batch-wise entropy)

    where e_ik is the mean squared error of autoencoder k on sample i and
    H(p) = -sum_k p_k log p_k. Minimising the sample-wise entropy makes every
    assignment confident; maximising the batch-wise entropy keeps the
    clusters balanced (it prevents the trivial solution where one autoencoder
    takes everything). ``s`` is the mean reconstruction error of the
    pretrained autoencoder on the training data, so that ``alpha`` and
    ``beta`` mean the same whatever the scale of the features.

    Initialisation: one autoencoder is pretrained on the reconstruction loss
    (a skorch ``NeuralNetRegressor``, kept as :attr:`autoencoder_`) and the K
    autoencoders start as copies of it. Identical copies cannot tell clusters
    apart, so k-means on ``X`` breaks the symmetry: for ``init_epochs``
    epochs, autoencoder k trains on the k-th k-means cluster only while the
    assignment network learns the k-means labels (cross-entropy). Joint
    training on L then runs for at most ``max_epochs`` epochs and stops early
    when fewer than a fraction ``tol`` of the hard labels changed during an
    epoch. On the digits, this ends at NMI 0.78 from k-means' 0.74 (without
    the warm start, at 0.56).

    **Assignment of a sample** (:meth:`predict`, :meth:`predict_proba`,
    :meth:`transform`): a sample belongs to the autoencoder that reconstructs
    it best. The soft assignment is the posterior of a mixture with equal
    weights and one isotropic Gaussian per autoencoder, centred on its
    reconstruction::

        q_ik = softmax_k( -n_features * e_ik / (2 * noise_variance_) ),

    with ``noise_variance_`` the mean over the training data of the smallest
    error, min_k e_ik. :meth:`predict` is the argmax of q, i.e. the smallest
    reconstruction error, so hard routing and the argmax of soft routing
    always agree. (The paper labels a sample with the argmax of the
    assignment network; that network serves here only as the training-time
    gate, and its output is available from :meth:`assignment_proba`.)

    Read more in the :doc:`user guide </routers>`.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (of autoencoders).

    hidden_dims : tuple of int, default=(128,)
        Hidden layer sizes of every encoder; the decoders mirror them.

    embedding_dim : int or "auto", default="auto"
        Code size of every autoencoder. ``"auto"`` is
        ``max(1, min(10, n_features // 4))``: an autoencoder whose code is as
        wide as its input reconstructs everything and cannot tell clusters
        apart.

    assignment_hidden_dims : tuple of int, default=(64,)
        Hidden layer sizes of the mixture assignment network.

    pretrain_epochs : int, default=50
        Epochs of pretraining the shared starting autoencoder.

    init_epochs : int, default=10
        Epochs of the warm start on the k-means clusters: autoencoder k
        learns to reconstruct the k-th cluster, and the assignment network
        learns the k-means labels.

    max_epochs : int, default=50
        Maximum number of epochs of joint training (at least 1: before it, the
        K autoencoders are identical copies).

    alpha : float, default=0.1
        Weight of the sample-wise entropy term.

    beta : float, default=1.0
        Weight of the batch-wise entropy term (balance of the clusters).

    tol : float, default=1e-3
        Stop when the fraction of samples whose hard label changed during an
        epoch is below ``tol``.

    batch_size : int, default=256
        Mini-batch size, for pretraining and joint training. The batch-wise
        entropy is computed per batch, so batches should hold many samples
        per cluster.

    lr : float, default=1e-3
        Adam learning rate, for pretraining and joint training.

    n_init : int, default=10
        Number of k-means restarts of the initialisation.

    device : str or None, default="cpu"
        Torch device. ``"auto"`` or ``None`` picks CUDA when it is available;
        asking for CUDA where there is none warns and uses the CPU.

    random_state : int, RandomState instance or None, default=None
        Seeds the networks' initialisation, the mini-batch order and k-means.
        Pass an int for reproducible results. The global torch and numpy
        random states are left as they were.

    verbose : int, default=0
        ``0`` prints nothing; ``>= 1`` shows tqdm progress bars for
        pretraining and joint training.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,), dtype=int64
        Cluster of each training sample, as :meth:`predict` gives it with the
        final model.

    n_iter_ : int
        Number of joint training epochs run.

    history_ : dict of lists
        ``"pretrain_loss"``: mean reconstruction loss per pretraining epoch
        (empty when a pretrained autoencoder was given). Per joint training
        epoch: ``"loss"``, ``"reconstruction"`` (the weighted term, divided by
        ``s``), ``"sample_entropy"``, ``"batch_entropy"`` (means over the
        epoch's batches) and ``"delta_label"`` (fraction of hard labels
        changed during the epoch).

    module_ : torch.nn.Module
        The fitted mixture: ``module_.autoencoders`` (K autoencoders) and
        ``module_.assignment`` (the assignment network).

    autoencoder_ : skorch.NeuralNetRegressor
        The pretrained autoencoder all K started from (not modified by joint
        training). Pass it to ``fit(X, autoencoder=...)`` of another instance
        to skip pretraining.

    reconstruction_scale_ : float
        ``s`` above: mean reconstruction error of :attr:`autoencoder_` on the
        training data.

    noise_variance_ : float
        Mean over the training data of the smallest reconstruction error;
        sets the sharpness of :meth:`predict_proba`.

    %(fitted_features)s

    See Also
    --------
    hemoe_sk.cluster.DECClusterer : Clusters in one autoencoder's code space.
    sklearn.cluster.KMeans : Clustering in the input space.

    Notes
    -----
    A cluster whose autoencoder reconstructs no training sample best is
    reported with a :class:`~sklearn.exceptions.ConvergenceWarning`; its
    column of :meth:`transform` stays well defined.

    References
    ----------
    .. [1] D. Zhang, Y. Sun, B. Eriksson and L. Balzano, "Deep Unsupervised
       Clustering Using Mixture of Autoencoders", arXiv:1712.07788, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from hemoe_sk.cluster import MixtureOfAutoencodersClusterer
    >>> X, _ = load_digits(return_X_y=True)
    >>> X = X[:300] / 16.0
    >>> mixae = MixtureOfAutoencodersClusterer(
    ...     n_clusters=4, hidden_dims=(32,), pretrain_epochs=10, max_epochs=10,
    ...     random_state=0).fit(X)
    >>> mixae.labels_.shape
    (300,)
    >>> proba = mixae.predict_proba(X[:2])
    >>> proba.shape
    (2, 4)
    >>> bool(np.allclose(proba.sum(axis=1), 1.0))
    True
    >>> bool((mixae.predict(X) == mixae.reconstruction_error(X).argmin(axis=1)).all())
    True
    """

    _parameter_constraints: dict = {
        **AutoencoderClustererMixin._shared_constraints,
        "embedding_dim": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "assignment_hidden_dims": [tuple, list],
        "init_epochs": [Interval(Integral, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        hidden_dims=(128,),
        embedding_dim="auto",
        assignment_hidden_dims=(64,),
        pretrain_epochs=50,
        init_epochs=10,
        max_epochs=50,
        alpha=0.1,
        beta=1.0,
        tol=1e-3,
        batch_size=256,
        lr=1e-3,
        n_init=10,
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        self.n_clusters = n_clusters
        self.hidden_dims = hidden_dims
        self.embedding_dim = embedding_dim
        self.assignment_hidden_dims = assignment_hidden_dims
        self.pretrain_epochs = pretrain_epochs
        self.init_epochs = init_epochs
        self.max_epochs = max_epochs
        self.alpha = alpha
        self.beta = beta
        self.tol = tol
        self.batch_size = batch_size
        self.lr = lr
        self.n_init = n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers

    _progress_desc = "MixAE pretraining"
    _clustering_attributes = (
        "module_", "labels_", "n_iter_", "history_", "reconstruction_scale_",
        "noise_variance_",
    )

    def _embedding_dim(self, n_features):
        if self.embedding_dim == "auto":
            return max(1, min(10, n_features // 4))
        return int(self.embedding_dim)

    @staticmethod
    def _errors(module, X):
        """Mean squared reconstruction error of every autoencoder, float64."""
        E = batched(module, module.errors, X, EVAL_BATCH_SIZE)
        return E.reshape(len(X), -1).astype(np.float64)

    def _log_q(self, errors):
        scale = self.n_features_in_ / (2.0 * self.noise_variance_)
        return log_softmax(-scale * errors, axis=1)

    def _route_proba(self, X):
        """Soft assignments of validated ``X`` from the reconstruction errors."""
        errors = check_finite_outputs(
            self._errors(self.module_, X), "reconstruction errors"
        )
        q = np.exp(self._log_q(errors))
        return q / q.sum(axis=1, keepdims=True)

    # -------------------------------------------------------------- fitting

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, autoencoder=None):
        """Pretrain, initialise with k-means, then train the mixture jointly.

        Parameters
        ----------
        %(fit_X_y_ignored)s

        autoencoder : skorch.NeuralNet, default=None
            A fitted autoencoder net, e.g. ``other.autoencoder_`` after
            :meth:`pretrain` or :meth:`fit` (a
            :class:`~hemoe_sk.cluster.DECClusterer`'s works too). Pretraining
            is then skipped and the K autoencoders start as copies of it; the
            given net is not modified. Its architecture replaces
            ``hidden_dims`` and ``embedding_dim``. Its input size must match
            ``X``.

        Returns
        -------
        self : MixtureOfAutoencodersClusterer
            Fitted estimator.
        """
        X, device, seeds, net, pretrain_loss = self._start_fit(X, autoencoder)
        _, kmeans_seed, train_seed = seeds
        assignment_dims = check_layer_sizes(
            self.assignment_hidden_dims, "assignment_hidden_dims"
        )
        train_keys = (
            "init_loss", "loss", "reconstruction", "sample_entropy", "batch_entropy",
            "delta_label",
        )
        history = {"pretrain_loss": pretrain_loss, **{key: [] for key in train_keys}}
        base = net.module_

        recon = batched(base, base, X, EVAL_BATCH_SIZE).reshape(X.shape)
        scale = float(np.mean((recon.astype(np.float64) - X) ** 2))
        scale = max(scale, 1e-12)
        init_labels = self._kmeans(X, kmeans_seed).labels_

        def train(seed, lr):
            module = self._init_module(
                base, X, init_labels, scale, assignment_dims, history, seed, lr,
                device,
            )
            return module, self._train(
                module, X, init_labels, scale, history, seed, lr, device
            )

        module, n_iter = self._train_with_retry(
            train,
            seed=train_seed,
            device=device,
            history=history,
            keys=train_keys,
            stage="joint training",
        )

        self.autoencoder_ = net
        self.module_ = module
        self.reconstruction_scale_ = scale
        self.n_iter_ = int(n_iter)
        self.history_ = history
        errors = self._errors(module, X)
        self.noise_variance_ = max(float(errors.min(axis=1).mean()), 1e-12)
        self.labels_ = self._log_q(errors).argmax(axis=1).astype(np.int64)
        self._warn_empty_clusters(
            "are empty: their autoencoders reconstruct no training sample best "
            "(too many clusters for the data, duplicate points, or too few epochs)"
        )
        return self

    def _init_module(self, base, X, init_labels, scale, assignment_dims, history,
                     seed, lr, device):
        """K copies of the pretrained autoencoder and the assignment network,
        warm-started on the k-means labels for ``init_epochs`` epochs:
        autoencoder k learns to reconstruct cluster k, and the network learns
        the labels (cross-entropy)."""
        k = self.n_clusters
        n_samples = X.shape[0]
        n_codes = self._encode(base, X[:1]).shape[1]
        module = _MixtureOfAutoencoders(
            [copy.deepcopy(base) for _ in range(k)], n_codes, assignment_dims
        ).to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        X_t = torch.from_numpy(X)
        target = torch.from_numpy(np.asarray(init_labels, dtype=np.int64))
        rng = np.random.default_rng(seed)
        batch_size = min(int(self.batch_size), n_samples)
        n_batches = int(np.ceil(n_samples / batch_size))
        module.train()
        try:
            for _ in range(self.init_epochs):
                total = 0.0
                for idx in np.array_split(rng.permutation(n_samples), n_batches):
                    idx = torch.from_numpy(idx)
                    t = target[idx].to(device)
                    logits, errors = module(X_t[idx].to(device))
                    own = errors.gather(1, t[:, None]).mean() / scale
                    loss = own + F.cross_entropy(logits, t)
                    if not torch.isfinite(loss):
                        raise DivergenceError("non-finite warm-start loss")
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += loss.item()
                history["init_loss"].append(total / n_batches)
        finally:
            module.eval()
        return module

    def _train(self, module, X, init_labels, scale, history, seed, lr, device):
        """Joint training on the MIXAE objective; returns the epochs run."""
        n_samples = X.shape[0]
        alpha, beta = float(self.alpha), float(self.beta)
        batch_size = min(int(self.batch_size), n_samples)
        n_batches = int(np.ceil(n_samples / batch_size))
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        X_t = torch.from_numpy(X)

        bar = None
        if self.verbose and self.max_epochs:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_epochs, desc="MixAE joint training")

        prev = np.asarray(init_labels)
        epoch = 0
        try:
            while epoch < self.max_epochs:
                module.train()
                sums = np.zeros(4)
                for idx in np.array_split(rng.permutation(n_samples), n_batches):
                    xb = X_t[torch.from_numpy(idx)].to(device)
                    logits, errors = module(xb)
                    loss, parts = _mixae_loss(logits, errors, scale, alpha, beta)
                    if not torch.isfinite(loss):
                        raise DivergenceError("non-finite joint training loss")
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    sums += (loss.item(), *(p.item() for p in parts))
                epoch += 1
                labels = self._errors(module, X).argmin(axis=1)
                delta = float(np.mean(labels != prev))
                prev = labels
                means = sums / n_batches
                for key, value in zip(
                    ("loss", "reconstruction", "sample_entropy", "batch_entropy"), means
                ):
                    history[key].append(float(value))
                history["delta_label"].append(delta)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{means[0]:.4g}", delta_label=f"{delta:.4f}")
                if delta < self.tol:
                    break
        finally:
            if bar is not None:
                bar.close()
            module.eval()
        return epoch

    # ------------------------------------------------------------ inference

    @property
    def _n_features_out(self):
        """Number of output features of :meth:`transform` (``n_clusters``)."""
        return len(self.module_.autoencoders)

    def reconstruction_error(self, X):
        """Mean squared reconstruction error of every autoencoder.

        %(new_X_parameters)s

        Returns
        -------
        errors : ndarray of shape (n_samples, n_clusters)
            ``errors[i, k]``: mean over the features of the squared error of
            autoencoder k on sample i.
        """
        X = self._validate_new(X)
        return check_finite_outputs(
            self._errors(self.module_, X), "reconstruction errors"
        )

    def assignment_proba(self, X):
        """Output of the mixture assignment network (the training-time gate).

        The paper's cluster probabilities; :meth:`predict_proba` uses the
        reconstruction errors instead (see the class description).

        %(new_X_parameters)s

        Returns
        -------
        p : ndarray of shape (n_samples, n_clusters)
            Softmax of the assignment network; rows sum to one.
        """
        X = self._validate_new(X)
        module = self.module_
        logits = batched(module, lambda x: module(x)[0], X, EVAL_BATCH_SIZE)
        logits = logits.reshape(len(X), -1).astype(np.float64)
        return np.exp(log_softmax(logits, axis=1))

    # ------------------------------------------------------------ pickling

    def __getstate__(self):
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and device_of(module).type != "cpu":
            # A model trained on a GPU loads on a machine without one.
            state = dict(state)
            state["module_"] = copy.deepcopy(module).cpu()
            state["_module_device"] = str(device_of(module))
        return state

    def __setstate__(self, state):
        device = state.pop("_module_device", None)
        super().__setstate__(state)
        if device is not None and torch.cuda.is_available():
            self.module_.to(device)
