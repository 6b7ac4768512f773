"""Deep Embedded Clustering (DEC) and Improved DEC (IDEC).

:class:`DECClusterer` pretrains an autoencoder on the reconstruction loss,
initialises cluster centres with k-means on the codes, then refines encoder
and centres together by minimising KL(P || Q) between the Student-t soft
assignments Q and a sharpened target distribution P (Xie et al., 2016). With
``gamma > 0`` the decoder stays in the loss with weight ``gamma`` (IDEC, Guo
et al., 2017), which keeps the codes faithful to the data.

The pretrained autoencoder can be reused: ``pretrain`` fits only the
autoencoder, and ``fit(X, autoencoder=...)`` refines a copy of one, so a
search over the number of clusters pays for pretraining once.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

from .._docstrings import fill_doc
from ..base import keep_state_on_error
from ..nn.inference import check_finite_outputs
from ..nn.training import DivergenceError
from ._autoencoder import AutoencoderClustererMixin
from .kernels import student_t_assign, student_t_log_assign

__all__ = ["DECClusterer"]


def _target_distribution(log_q):
    """DEC target p_ij ∝ q_ij^2 / f_j with f_j = sum_i q_ij, from log q."""
    log_f = logsumexp(log_q, axis=0)
    p = np.exp(log_softmax(2.0 * log_q - log_f[None, :], axis=1))
    return p / p.sum(axis=1, keepdims=True)


def _reseed_empty_clusters(Z, labels, centers, optimizer, n_clusters):
    """Move the centre of each empty cluster onto a badly served sample.

    Like k-means, an empty cluster takes the code farthest from its own
    centre, taken from a cluster that keeps at least one other sample. Adam's
    moments for a moved centre are reset. Returns the number of centres moved
    (fewer than the empty ones when the codes have too few distinct values).
    """
    counts = np.bincount(labels, minlength=n_clusters)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return 0
    C = centers.detach().cpu().numpy().astype(np.float64)
    dist = ((Z.astype(np.float64) - C[labels]) ** 2).sum(axis=1)
    candidates = iter(np.argsort(-dist, kind="stable"))
    state = optimizer.state.get(centers, {})
    moved = 0
    for j in empty:
        for i in candidates:
            if dist[i] > 0 and counts[labels[i]] > 1:
                break
        else:
            break
        counts[labels[i]] -= 1
        counts[j] += 1
        with torch.no_grad():
            centers[j] = torch.as_tensor(Z[i], device=centers.device)
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][j] = 0.0
        moved += 1
    return moved


@fill_doc
class DECClusterer(AutoencoderClustererMixin, ClusterMixin, BaseEstimator):
    """Deep Embedded Clustering (DEC), and IDEC with ``gamma > 0``.

    A fully connected autoencoder (:class:`hemoe_sk.nn.AutoEncoder`, wrapped
    in a skorch ``NeuralNetRegressor``) is pretrained to reconstruct ``X``.
    k-means on its codes gives the initial cluster centres. Encoder and
    centres are then refined together: the soft assignment of sample i to
    cluster j is a Student-t kernel

        q_ij ∝ (1 + ||z_i - mu_j||^2 / alpha) ^ (-(alpha + 1) / 2),

    and every ``update_interval`` steps a sharpened target
    p_ij ∝ q_ij^2 / sum_i q_ij is recomputed on the whole data set. Each
    mini-batch step minimises KL(P || Q) + ``gamma`` * reconstruction MSE.
    Training stops when fewer than a fraction ``tol`` of the hard labels
    changed between two target updates, or after ``max_iter`` steps.

    The refinement is a plain torch loop over the skorch net's ``module_``
    (skorch's ``fit`` has no place for a target that changes during
    training); the refined net is kept as :attr:`autoencoder_`.

    Read more in the :doc:`user guide </dec>`.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.

    hidden_dims : tuple of int, default=(256, 128)
        Hidden layer sizes of the encoder; the decoder mirrors them.

    embedding_dim : int, default=5
        Size of the code (the space the clusters live in).

    pretrain_epochs : int, default=300
        Epochs of autoencoder pretraining on the reconstruction loss. A
        well-trained autoencoder matters more than anything else for the
        quality of the clusters.
        ``0`` clusters the codes of the randomly initialised autoencoder.

    max_iter : int, default=2000
        Maximum number of mini-batch steps of the clustering refinement.
        ``0`` keeps the k-means centres on the pretrained codes.

    update_interval : int, default=20
        Number of mini-batch steps between two recomputations of the target
        distribution P (on the whole data set) and of the stopping test.

    tol : float, default=1e-3
        Stop when the fraction of samples whose hard label changed between
        two target updates is below ``tol``.

    alpha : float, default=1.0
        Degrees of freedom of the Student-t kernel.

    gamma : float, default=0.0
        Weight of the reconstruction loss during refinement. ``0`` is plain
        DEC (the decoder is not used after pretraining); ``gamma > 0`` is
        IDEC.

    batch_size : int, default=256
        Mini-batch size, for pretraining and refinement.

    lr : float, default=1e-3
        Adam learning rate, for pretraining and refinement.

    n_init : int, default=20
        Number of k-means restarts used to find the initial centres.

    device : str or None, default="cpu"
        Torch device. ``"auto"`` or ``None`` picks CUDA when it is available;
        asking for CUDA where there is none warns and uses the CPU.

    random_state : int, RandomState instance or None, default=None
        Seeds the autoencoder initialisation, the mini-batch order and
        k-means. Pass an int for reproducible results. The global torch and
        numpy random states are left as they were.

    verbose : int, default=0
        ``0`` prints nothing; ``>= 1`` shows tqdm progress bars for
        pretraining and refinement.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample, as :meth:`predict` gives it with the
        final model.

    cluster_centers_ : ndarray of shape (n_clusters, n_codes)
        Cluster centres in code space (``n_codes`` is the autoencoder's code
        size).

    n_iter_ : int
        Number of refinement steps run.

    autoencoder_ : skorch.NeuralNetRegressor
        The fitted (pretrained, then refined) autoencoder net. Pass it to
        ``fit(X, autoencoder=...)`` of another instance to skip pretraining.

    history_ : dict of lists
        ``"pretrain_loss"``: mean reconstruction loss per pretraining epoch
        (empty when a pretrained autoencoder was given). One entry per target
        update (the last one at the final step) in ``"iteration"``,
        ``"delta_label"`` (fraction of labels changed since the previous
        update, NaN for the first), ``"loss"``, ``"kl"`` and
        ``"reconstruction"`` (means over the steps since the previous update,
        NaN for the first) and ``"n_reseeded"`` (empty clusters re-seeded).

    %(fitted_features)s

    See Also
    --------
    sklearn.cluster.KMeans : Clustering in the input space.
    sklearn.mixture.GaussianMixture : Soft clustering with ``predict_proba``.

    Notes
    -----
    A cluster left without samples at a target update is re-seeded on the
    code farthest from its centre (as k-means does; counted in
    ``history_["n_reseeded"]``). One still empty at the end is reported with
    a :class:`~sklearn.exceptions.ConvergenceWarning`; its column of
    :meth:`transform` stays well defined (positive, rows sum to one).

    Results are reproducible for a fixed ``random_state`` and a fixed number
    of torch threads. The estimator never changes torch's thread settings.

    References
    ----------
    .. [1] J. Xie, R. Girshick and A. Farhadi, "Unsupervised Deep Embedding
       for Clustering Analysis", ICML 2016.
    .. [2] X. Guo, L. Gao, X. Liu and J. Yin, "Improved Deep Embedded
       Clustering with Local Structure Preservation", IJCAI 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from hemoe_sk.cluster import DECClusterer
    >>> X, _ = load_digits(return_X_y=True)
    >>> X = X[:300] / 16.0
    >>> dec = DECClusterer(n_clusters=10, hidden_dims=(32,), pretrain_epochs=20,
    ...                    max_iter=50, random_state=0).fit(X)
    >>> dec.labels_.shape
    (300,)
    >>> proba = dec.predict_proba(X[:2])
    >>> proba.shape
    (2, 10)
    >>> bool(np.allclose(proba.sum(axis=1), 1.0))
    True

    Pretrain once, then refine for several numbers of clusters:

    >>> from sklearn.base import clone
    >>> base = clone(dec).pretrain(X)
    >>> fits = {k: clone(dec).set_params(n_clusters=k).fit(
    ...     X, autoencoder=base.autoencoder_) for k in (2, 3)}
    >>> fits[3].cluster_centers_.shape
    (3, 5)
    """

    _parameter_constraints: dict = {
        **AutoencoderClustererMixin._shared_constraints,
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "update_interval": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "gamma": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        hidden_dims=(256, 128),
        embedding_dim=5,
        pretrain_epochs=300,
        max_iter=2000,
        update_interval=20,
        tol=1e-3,
        alpha=1.0,
        gamma=0.0,
        batch_size=256,
        lr=1e-3,
        n_init=20,
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        self.n_clusters = n_clusters
        self.hidden_dims = hidden_dims
        self.embedding_dim = embedding_dim
        self.pretrain_epochs = pretrain_epochs
        self.max_iter = max_iter
        self.update_interval = update_interval
        self.tol = tol
        self.alpha = alpha
        self.gamma = gamma
        self.batch_size = batch_size
        self.lr = lr
        self.n_init = n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers

    _progress_desc = "DEC pretraining"
    _clustering_attributes = ("cluster_centers_", "labels_", "n_iter_", "history_")

    def _route_proba(self, X):
        """q for validated ``X`` with the fitted model."""
        Z = check_finite_outputs(self._encode(self.autoencoder_.module_, X), "codes")
        return student_t_assign(Z, self.cluster_centers_, self.alpha)

    # -------------------------------------------------------------- fitting

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, autoencoder=None):
        """Pretrain the autoencoder, initialise with k-means, refine.

        Parameters
        ----------
        %(fit_X_y_ignored)s

        autoencoder : skorch.NeuralNet, default=None
            A fitted autoencoder net, e.g. ``other.autoencoder_`` of a
            DECClusterer after :meth:`pretrain` or :meth:`fit`. Pretraining
            is then skipped and a deep copy of it is refined; the given net is
            not modified. Its architecture replaces ``hidden_dims`` and
            ``embedding_dim``. Its input size must match ``X``.

        Returns
        -------
        self : DECClusterer
            Fitted estimator.
        """
        X, device, seeds, net, pretrain_loss = self._start_fit(X, autoencoder)
        _, kmeans_seed, refine_seed = seeds
        refine_keys = (
            "iteration", "delta_label", "loss", "kl", "reconstruction", "n_reseeded"
        )
        history = {"pretrain_loss": pretrain_loss, **{key: [] for key in refine_keys}}

        Z = check_finite_outputs(self._encode(net.module_, X), "codes")
        kmeans = self._kmeans(Z, kmeans_seed)
        init_centers = kmeans.cluster_centers_.astype(np.float32)
        module_state = copy.deepcopy(net.module_.state_dict())
        centers, n_iter = self._train_with_retry(
            lambda seed, lr: self._refine(
                net.module_, X, init_centers, history, seed, lr, device
            ),
            seed=refine_seed,
            device=device,
            history=history,
            keys=refine_keys,
            stage="refinement",
            restore=lambda: net.module_.load_state_dict(module_state),
        )

        self.autoencoder_ = net
        self.cluster_centers_ = centers.astype(np.float64)
        self.n_iter_ = int(n_iter)
        self.history_ = history
        self.labels_ = self._route_proba(X).argmax(axis=1).astype(np.int64)
        self._warn_empty_clusters(
            "have no training sample after refinement (too many clusters for the "
            "data, or duplicate points)"
        )
        return self

    def _refine(self, module, X, init_centers, history, seed, lr, device):
        """The DEC/IDEC refinement loop; returns (centres, steps run).

        A plain torch loop over the skorch net's ``module_``: the target P
        changes every ``update_interval`` steps, which skorch's ``fit`` has no
        place for.
        """
        n_samples = X.shape[0]
        alpha = float(self.alpha)
        gamma = float(self.gamma)
        batch_size = min(int(self.batch_size), n_samples)
        centers = nn.Parameter(torch.as_tensor(init_centers, device=device).clone())
        # Plain DEC never uses the decoder after pretraining.
        trained = module
        if gamma == 0 and hasattr(module, "encoder"):
            trained = module.encoder
        optimizer = torch.optim.Adam([centers, *trained.parameters()], lr=lr)
        rng = np.random.default_rng(seed)
        X_t = torch.from_numpy(X)

        bar = None
        if self.verbose and self.max_iter:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iter, desc="DEC refinement")

        prev_labels = None
        order = rng.permutation(n_samples)
        pos = 0
        sums = np.zeros(3)  # loss, kl, reconstruction since the last update
        n_steps = 0
        it = 0
        try:
            while True:
                if it % self.update_interval == 0 or it == self.max_iter:
                    Z = self._encode(module, X)
                    log_q = student_t_log_assign(
                        Z, centers.detach().cpu().numpy(), alpha
                    )
                    labels = log_q.argmax(axis=1)
                    delta = (
                        np.nan
                        if prev_labels is None
                        else float(np.mean(labels != prev_labels))
                    )
                    means = sums / n_steps if n_steps else np.full(3, np.nan)
                    history["iteration"].append(it)
                    history["delta_label"].append(delta)
                    history["loss"].append(float(means[0]))
                    history["kl"].append(float(means[1]))
                    history["reconstruction"].append(float(means[2]))
                    sums[:] = 0.0
                    n_steps = 0
                    if bar is not None and prev_labels is not None:
                        bar.set_postfix(delta_label=f"{delta:.4f}")
                    converged = prev_labels is not None and delta < self.tol
                    if it == self.max_iter or converged:
                        history["n_reseeded"].append(0)
                        break
                    n_reseeded = _reseed_empty_clusters(
                        Z, labels, centers, optimizer, self.n_clusters
                    )
                    history["n_reseeded"].append(n_reseeded)
                    if n_reseeded:
                        log_q = student_t_log_assign(
                            Z, centers.detach().cpu().numpy(), alpha
                        )
                        labels = log_q.argmax(axis=1)
                    prev_labels = labels
                    p_all = torch.from_numpy(
                        _target_distribution(log_q).astype(np.float32)
                    )

                if pos + batch_size > n_samples:
                    order = rng.permutation(n_samples)
                    pos = 0
                idx = torch.from_numpy(order[pos : pos + batch_size])
                pos += batch_size
                xb = X_t[idx].to(device)
                pb = p_all[idx].to(device)

                module.train()
                z = module.encode(xb)
                kl = F.kl_div(
                    student_t_log_assign(z, centers, alpha), pb, reduction="batchmean"
                )
                if gamma > 0:
                    rec = F.mse_loss(module.decode(z), xb)
                    loss = kl + gamma * rec
                else:
                    rec = kl.new_zeros(())
                    loss = kl
                if not torch.isfinite(loss):
                    raise DivergenceError("non-finite refinement loss")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

                sums += (loss.item(), kl.item(), rec.item())
                n_steps += 1
                it += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            module.eval()
        return centers.detach().cpu().numpy(), it

    # ------------------------------------------------------------ inference

    @property
    def _n_features_out(self):
        """Number of output features of :meth:`transform` (``n_clusters``)."""
        return self.cluster_centers_.shape[0]

    def embed(self, X):
        """Autoencoder codes of ``X``.

        Available after :meth:`pretrain` as well as after :meth:`fit`.

        %(new_X_parameters)s

        Returns
        -------
        Z : ndarray of shape (n_samples, n_codes), dtype=float32
            Codes (the space the cluster centres live in).
        """
        check_is_fitted(self, "autoencoder_")
        X = self._validate_X(X, reset=False)
        return self._encode(self.autoencoder_.module_, X)
