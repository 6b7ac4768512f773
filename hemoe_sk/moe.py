"""Flat mixtures of experts trained end to end: soft, sparse top-k and guided.

:class:`MixtureOfExpertsClassifier` is a scikit-learn classifier around
:class:`MixtureOfExpertsModule`, a torch module with ``n_experts`` small MLP
experts and one gating network. Three gating schemes are offered:

``"soft"``
    Adaptive mixture of local experts (Jacobs, Jordan, Nowlan and Hinton,
    1991): a softmax gate weights every expert, and the loss is the negative
    log of the gate-weighted mixture of the experts' class probabilities.
``"topk"``
    Sparsely-gated noisy top-k gating (Shazeer et al., 2017): tunable
    Gaussian noise on the gate logits during training, only the ``k`` largest
    logits kept and soft-maxed, importance and load balancing losses, and
    only the selected experts are run on each sample.
``"guided"``
    Label-guided gating: every expert is assigned a block of classes and the
    gate is trained, next to the classification loss, to send a sample to the
    experts of its class. The labels guide training only; prediction uses the
    learned gate alone.

The module's ``forward`` returns *scores whose softmax is the predicted
distribution* (log mixture probabilities, or weighted logits), so the shared
skorch classifier with ``CrossEntropyLoss`` trains the exact losses below, and
the module's ``auxiliary_loss`` adds the gating terms during training.
"""

from __future__ import annotations

import csv
import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn import functional as F

from .nn.modules import _mlp
from .nn.nets import (
    _batched,
    encode_labels,
    keep_state_on_error,
    make_classifier_net,
    predict_proba,
    resolve_device,
    seed_source,
    train_net,
)

__all__ = ["MixtureOfExpertsClassifier", "MixtureOfExpertsModule", "class_expert_map"]

_GATINGS = ("soft", "topk", "guided")
_LOSSES = ("mixture_nll", "weighted_output")


def class_expert_map(n_classes, n_experts):
    """Binary ``(n_classes, n_experts)`` map used by guided gating.

    With at least as many classes as experts, the classes (in the order of
    ``classes_``) are cut into ``n_experts`` contiguous blocks with
    :func:`numpy.array_split` and block ``j`` goes to expert ``j``. With more
    experts than classes, the experts are cut into ``n_classes`` blocks
    instead, so every expert has exactly one class and every class at least
    one expert.
    """
    m = np.zeros((n_classes, n_experts), dtype=np.float32)
    if n_experts <= n_classes:
        for e, block in enumerate(np.array_split(np.arange(n_classes), n_experts)):
            m[block, e] = 1.0
    else:
        for c, block in enumerate(np.array_split(np.arange(n_experts), n_classes)):
            m[c, block] = 1.0
    return m


def _cv_squared(v, eps=1e-10):
    """Squared coefficient of variation ``var(v) / mean(v)**2`` (population)."""
    if v.numel() < 2:
        return v.new_zeros(())
    return v.var(unbiased=False) / (v.mean() ** 2 + eps)


class _Expert(nn.Module):
    """One expert: an MLP body (possibly empty) and a linear output layer."""

    def __init__(self, n_features, n_classes, hidden):
        super().__init__()
        self.body = _mlp(n_features, hidden, 0.0)
        self.output = nn.Linear(hidden[-1] if hidden else n_features, n_classes)

    def forward(self, x):
        return self.output(self.body(x))


class MixtureOfExpertsModule(nn.Module):
    """Torch module of a flat mixture of MLP experts with one gating network.

    ``forward`` returns, per sample, scores whose softmax is the predicted
    class distribution: the log of the gate-weighted mixture of the experts'
    class probabilities (``loss="mixture_nll"``) or the gate-weighted sum of
    the experts' logits (``loss="weighted_output"``). Cross-entropy on these
    scores is exactly the losses documented in
    :class:`MixtureOfExpertsClassifier`; :meth:`auxiliary_loss` adds the
    gating terms.

    Parameters
    ----------
    n_features, n_classes : int
        Input size and number of classes.
    n_experts : int, default=4
        Number of experts.
    expert_hidden : tuple of int, default=(64,)
        Hidden sizes of every expert (empty: linear experts).
    gate_hidden : tuple of int, default=(32,)
        Hidden sizes of the gating network (empty: linear gate).
    gating : {"soft", "topk", "guided"}, default="soft"
        Gating scheme.
    k : int, default=2
        Experts kept per sample by top-k gating.
    loss : {"mixture_nll", "weighted_output"}, default="mixture_nll"
        What ``forward`` returns, hence the classification loss.
    balance_weight : float, default=0.1
        Weight of the importance + load losses (top-k).
    assignment_weight, diversity_weight, l2_weight : float
        Weights of the guided gating terms.
    noise_epsilon : float, default=1e-2
        Added to the learned noise scale (top-k), as in Shazeer et al.
    """

    def __init__(
        self,
        n_features,
        n_classes,
        n_experts=4,
        expert_hidden=(64,),
        gate_hidden=(32,),
        gating="soft",
        k=2,
        loss="mixture_nll",
        balance_weight=0.1,
        assignment_weight=1.0,
        diversity_weight=0.1,
        l2_weight=1e-4,
        noise_epsilon=1e-2,
    ):
        super().__init__()
        if gating not in _GATINGS:
            raise ValueError(f"gating must be one of {_GATINGS}, got {gating!r}.")
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}.")
        n_experts = int(n_experts)
        if not 1 <= int(k) <= n_experts:
            raise ValueError(f"k={k} must be between 1 and n_experts={n_experts}.")
        expert_hidden = tuple(int(h) for h in expert_hidden)
        gate_hidden = tuple(int(h) for h in gate_hidden)
        self.n_experts = n_experts
        self.gating = gating
        self.k = int(k)
        self.loss = loss
        self.balance_weight = float(balance_weight)
        self.assignment_weight = float(assignment_weight)
        self.diversity_weight = float(diversity_weight)
        self.l2_weight = float(l2_weight)
        self.noise_epsilon = float(noise_epsilon)

        self.experts = nn.ModuleList(
            _Expert(n_features, n_classes, expert_hidden) for _ in range(n_experts)
        )
        self.gate_body = _mlp(n_features, gate_hidden, 0.0)
        gate_in = gate_hidden[-1] if gate_hidden else n_features
        self.gate_logits = nn.Linear(gate_in, n_experts)
        if gating == "topk":
            # Shazeer et al. initialise both gating matrices to zero: all
            # experts start equally likely, the noise breaks the ties.
            self.gate_noise = nn.Linear(gate_in, n_experts)
            for layer in (self.gate_logits, self.gate_noise):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        if gating == "guided":
            self.register_buffer(
                "class_expert_map",
                torch.from_numpy(class_expert_map(n_classes, n_experts)),
            )
        self._cache = {}

    # -- gating -----------------------------------------------------------
    def _route(self, x):
        """Selected experts and their log gate weights.

        Returns ``(idx, log_w)``: ``idx`` is ``None`` when every expert runs
        (soft and guided gating; ``log_w`` is then ``(n, n_experts)``), else
        the ``(n, k)`` indices of the selected experts with ``log_w`` their
        ``(n, k)`` log weights.
        """
        h = self.gate_body(x)
        clean = self.gate_logits(h)
        if self.gating != "topk":
            log_w = F.log_softmax(clean, dim=1)
            self._cache = {"gates": log_w.exp()}
            return None, log_w
        k, n_exp = self.k, self.n_experts
        noisy, std = clean, None
        noisy_train = self.training and k < n_exp
        if noisy_train:
            std = F.softplus(self.gate_noise(h)) + self.noise_epsilon
            noisy = clean + torch.randn_like(clean) * std
        top_vals, top_idx = noisy.topk(min(k + 1, n_exp), dim=1)
        idx = top_idx[:, :k]
        log_w = F.log_softmax(top_vals[:, :k], dim=1)
        if self.training:
            gates = torch.zeros_like(clean).scatter(1, idx, log_w.exp())
            balance = _cv_squared(gates.sum(0))
            if noisy_train:
                balance = balance + _cv_squared(
                    self._load(clean, noisy, std, top_vals).sum(0)
                )
            self._cache = {"balance": balance}
        return idx, log_w

    def _load(self, clean, noisy, std, top_vals):
        """Smooth probability that each expert is in the top k (Shazeer et al.).

        For expert ``i`` the noise is re-drawn in thought only: it stays in
        the top k when its clean logit plus new noise beats the k-th largest
        of the *other* noisy logits.
        """
        k = self.k
        threshold_in = top_vals[:, k : k + 1]  # (k+1)-th largest: if i is in
        threshold_out = top_vals[:, k - 1 : k]  # k-th largest: if i is out
        is_in = noisy > threshold_in
        p_in = torch.special.ndtr((clean - threshold_in) / std)
        p_out = torch.special.ndtr((clean - threshold_out) / std)
        return torch.where(is_in, p_in, p_out)

    def _per_expert(self, x, idx, fn):
        """``fn(expert, rows)`` stacked to ``(n, k or n_experts, d)``.

        With ``idx`` given, each expert sees only the rows that selected it
        (and is not called at all when none did).
        """
        if idx is None:
            return torch.stack([fn(e, x) for e in self.experts], dim=1)
        n, k = idx.shape
        positions, outputs = [], []
        for i, expert in enumerate(self.experts):
            rows, slots = torch.nonzero(idx == i, as_tuple=True)
            if rows.numel() == 0:
                continue
            outputs.append(fn(expert, x.index_select(0, rows)))
            positions.append(rows * k + slots)
        positions = torch.cat(positions)
        # Every (row, slot) pair appears exactly once: invert the permutation.
        order = torch.empty_like(positions)
        order[positions] = torch.arange(positions.numel(), device=positions.device)
        return torch.cat(outputs)[order].reshape(n, k, -1)

    # -- module contract --------------------------------------------------
    def forward(self, x):
        idx, log_w = self._route(x)
        logits = self._per_expert(x, idx, lambda expert, xb: expert(xb))
        if self.loss == "mixture_nll":
            return torch.logsumexp(
                log_w.unsqueeze(-1) + F.log_softmax(logits, -1), dim=1
            )
        return (log_w.exp().unsqueeze(-1) * logits).sum(dim=1)

    def embed(self, x):
        """Gate-weighted mixture of the experts' last hidden layers.

        (The input itself for linear experts.)
        """
        idx, log_w = self._route(x)
        hidden = self._per_expert(x, idx, lambda expert, xb: expert.body(xb))
        return (log_w.exp().unsqueeze(-1) * hidden).sum(dim=1)

    def gate_weights(self, x):
        """Dense ``(n, n_experts)`` gate weights (zeros for unselected experts)."""
        idx, log_w = self._route(x)
        if idx is None:
            return log_w.exp()
        return torch.zeros(
            x.shape[0], self.n_experts, dtype=log_w.dtype, device=log_w.device
        ).scatter(1, idx, log_w.exp())

    def auxiliary_loss(self, y_true):
        """Gating terms for the last training batch (added by skorch)."""
        zero = self.gate_logits.weight.new_zeros(())
        if self.gating == "topk":
            return self.balance_weight * self._cache.get("balance", zero)
        if self.gating == "soft":
            return zero
        gates = self._cache["gates"]
        target = self.class_expert_map[y_true.long()]
        assignment = F.binary_cross_entropy(gates.clamp(1e-6, 1 - 1e-6), target)
        mean_gate = gates.mean(dim=0).clamp_min(1e-12)
        diversity = math.log(self.n_experts) + (mean_gate * mean_gate.log()).sum()
        l2 = sum(
            (m.weight**2).sum()
            for m in [*self.gate_body.modules(), self.gate_logits]
            if isinstance(m, nn.Linear)
        )
        return (
            self.assignment_weight * assignment
            + self.diversity_weight * diversity
            + self.l2_weight * l2
        )

    def __getstate__(self):
        # The cache holds tensors of the last batch's autograd graph.
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


def _check_sizes(name, sizes, *, allow_empty):
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(
            f"{name} must be a tuple of positive ints, got {sizes!r}."
        ) from None
    if not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise ValueError(f"{name} must be a tuple of positive ints, got {sizes!r}.")
    if not sizes and not allow_empty:
        raise ValueError(f"{name} must not be empty.")
    return tuple(int(s) for s in sizes)


class MixtureOfExpertsClassifier(ClassifierMixin, BaseEstimator):
    """Mixture of MLP experts with a learned gate, trained end to end.

    Parameters
    ----------
    n_experts : int, default=4
        Number of experts.
    expert_hidden : tuple of int, default=(64,)
        Hidden layer sizes of every expert; ``()`` gives linear (softmax
        regression) experts.
    gate_hidden : tuple of int, default=(32,)
        Hidden layer sizes of the gating network; ``()`` gives a linear gate
        (as in Shazeer et al.).
    gating : {"soft", "topk", "guided"}, default="soft"
        ``"soft"``: softmax gate over all experts (Jacobs et al., 1991).
        ``"topk"``: noisy top-k gating; only the selected experts run
        (Shazeer et al., 2017). ``"guided"``: softmax gate trained to follow
        a class-to-expert assignment (see Notes).
    k : int, default=2
        Number of experts used per sample with ``gating="topk"``; must not
        exceed ``n_experts``. Ignored otherwise.
    loss : {"mixture_nll", "weighted_output"}, default="mixture_nll"
        Classification loss. ``"mixture_nll"`` is the mixture-of-experts
        likelihood :math:`-\\log \\sum_i g_i(x) p_i(y \\mid x)`.
        ``"weighted_output"`` combines the experts' logits first and applies
        one softmax, :math:`-\\log \\mathrm{softmax}(\\sum_i g_i(x) z_i(x))_y`
        (the "cooperative" error that Jacobs et al. contrast with the
        mixture likelihood). Prediction uses the same combination as training.
    balance_weight : float, default=0.1
        Weight of the top-k importance and load losses.
    assignment_weight : float, default=1.0
        Guided gating: weight of the binary cross-entropy between the gate
        weights and the experts assigned to the sample's class.
    diversity_weight : float, default=0.1
        Guided gating: weight of :math:`\\log E - H(\\bar g)`, the entropy gap
        of the batch-mean gate, which keeps all experts in use.
    l2_weight : float, default=1e-4
        Guided gating: weight of the squared L2 norm of the gating network's
        weight matrices.
    max_epochs : int, default=40
        Training epochs.
    lr : float, default=3e-3
        Learning rate.
    batch_size : int, default=64
        Mini-batch size.
    optimizer : torch optimizer class, default=torch.optim.Adam
        Passed as a class, never an instance.
    device : str, default="cpu"
        Torch device; ``"auto"`` picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, batch order and gate noise.
    verbose : int, default=0
        ``0`` is silent; ``>0`` prints skorch's per-epoch table.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features,)
        Feature names, when ``X`` had string column names.
    net_ : HemoeNeuralNetClassifier
        The trained skorch net; ``net_.module_`` is a
        :class:`MixtureOfExpertsModule`.
    expert_usage_ : ndarray of shape (n_experts,)
        Mean gate weight of each expert on the training data (sums to 1).
    expert_classes_ : list of ndarray
        Guided gating only: the classes assigned to each expert.

    Notes
    -----
    With gates :math:`g(x)` and expert logits :math:`z_i(x)`,
    :math:`p_i = \\mathrm{softmax}(z_i)`, the training loss per batch is the
    classification loss above plus

    * top-k: ``balance_weight * (CV(importance)^2 + CV(load)^2)``, where
      importance is the batch sum of each expert's gate weight and load the
      batch sum of the smooth probability that the expert is selected;
    * guided: ``assignment_weight * BCE(g(x), M[y]) + diversity_weight *
      (log E - H(mean_b g)) + l2_weight * ||W_gate||^2``, with ``M`` the
      class-to-expert map (:func:`class_expert_map`).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from hemoe_sk.moe import MixtureOfExpertsClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MixtureOfExpertsClassifier(n_experts=3, max_epochs=30, random_state=0)
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    >>> clf.gate_weights(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints = {
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "expert_hidden": ["array-like"],
        "gate_hidden": ["array-like"],
        "gating": [StrOptions(set(_GATINGS))],
        "k": [Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions(set(_LOSSES))],
        "balance_weight": [Interval(Real, 0, None, closed="left")],
        "assignment_weight": [Interval(Real, 0, None, closed="left")],
        "diversity_weight": [Interval(Real, 0, None, closed="left")],
        "l2_weight": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [callable],
        "device": [str, torch.device, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_experts=4,
        *,
        expert_hidden=(64,),
        gate_hidden=(32,),
        gating="soft",
        k=2,
        loss="mixture_nll",
        balance_weight=0.1,
        assignment_weight=1.0,
        diversity_weight=0.1,
        l2_weight=1e-4,
        max_epochs=40,
        lr=3e-3,
        batch_size=64,
        optimizer=torch.optim.Adam,
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        self.n_experts = n_experts
        self.expert_hidden = expert_hidden
        self.gate_hidden = gate_hidden
        self.gating = gating
        self.k = k
        self.loss = loss
        self.balance_weight = balance_weight
        self.assignment_weight = assignment_weight
        self.diversity_weight = diversity_weight
        self.l2_weight = l2_weight
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- fitting ----------------------------------------------------------
    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the experts and the gate jointly.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels (any type ``np.unique`` can sort).

        Returns
        -------
        self : MixtureOfExpertsClassifier
            Fitted estimator.
        """
        X, y = validate_data(self, X, y, dtype=np.float32)
        classes, y_enc = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(
                "MixtureOfExpertsClassifier needs samples of at least 2 classes "
                f"in y; got 1 class ({classes[0]!r})."
            )
        expert_hidden = _check_sizes(
            "expert_hidden", self.expert_hidden, allow_empty=True
        )
        gate_hidden = _check_sizes("gate_hidden", self.gate_hidden, allow_empty=True)
        if self.gating == "topk" and self.k > self.n_experts:
            raise ValueError(f"k={self.k} must not exceed n_experts={self.n_experts}.")
        n_classes = len(classes)
        rng = seed_source(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        net = make_classifier_net(
            MixtureOfExpertsModule,
            n_features=X.shape[1],
            n_classes=n_classes,
            module_params=dict(
                n_experts=self.n_experts,
                expert_hidden=expert_hidden,
                gate_hidden=gate_hidden,
                gating=self.gating,
                k=self.k if self.gating == "topk" else 1,
                loss=self.loss,
                balance_weight=self.balance_weight,
                assignment_weight=self.assignment_weight,
                diversity_weight=self.diversity_weight,
                l2_weight=self.l2_weight,
            ),
            max_epochs=self.max_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            device=resolve_device(self.device),
        )
        if self.verbose:
            net.set_params(verbose=1)
        # skorch wraps numpy arrays with torch.as_tensor, which warns on
        # read-only buffers (e.g. joblib memmaps): copy only in that case.
        X = np.require(X, requirements=["W"])
        train_net(net, X, y_enc.astype(np.int64), seed=seed, stage=type(self).__name__)
        self.classes_ = classes
        self.net_ = net
        self.expert_usage_ = self._gates(X).mean(axis=0).astype(np.float64)
        if self.gating == "guided":
            m = class_expert_map(n_classes, self.n_experts)
            self.expert_classes_ = [
                self.classes_[m[:, e] > 0] for e in range(self.n_experts)
            ]
        return self

    # -- prediction -------------------------------------------------------
    def _validate(self, X):
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float32, reset=False)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to one.
        """
        X = self._validate(X)
        return predict_proba(self.net_, X)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log probabilities.
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Most probable class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_.take(proba.argmax(axis=1))

    # -- diagnostics ------------------------------------------------------
    def _gates(self, X):
        module = self.net_.module_
        out = _batched(module, module.gate_weights, X, 4096)
        return out.reshape(len(X), self.n_experts)

    def gate_weights(self, X):
        """Gate weight of every expert for every sample (eval mode, no noise).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        gates : ndarray of shape (n_samples, n_experts)
            Rows sum to one; with top-k gating only ``k`` entries per row are
            non-zero.
        """
        return self._gates(self._validate(X))

    def label_expert_matrix(self, X, y):
        """Mean gate weight of each expert over the samples of each label.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.
        y : array-like of shape (n_samples,)
            Their labels (need not be predicted ones).

        Returns
        -------
        labels : ndarray of shape (n_labels,)
            ``np.unique(y)``.
        matrix : ndarray of shape (n_labels, n_experts)
            Row ``i`` is the mean gate vector of the samples labelled
            ``labels[i]``.
        """
        gates = self.gate_weights(X)
        y = np.asarray(y)
        if y.shape[0] != gates.shape[0]:
            raise ValueError(f"X has {gates.shape[0]} samples but y has {y.shape[0]}.")
        labels, inverse = np.unique(y, return_inverse=True)
        matrix = np.zeros((len(labels), self.n_experts))
        np.add.at(matrix, inverse, gates)
        matrix /= np.bincount(inverse, minlength=len(labels))[:, None]
        return labels, matrix

    def export_gates(self, X, y, path):
        """Write per-sample gate weights with their labels to a CSV file.

        Columns: ``label`` (from ``y``), ``predicted`` (this model's
        prediction), then ``expert_0`` ... ``expert_{n_experts-1}``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.
        y : array-like of shape (n_samples,)
            Their labels.
        path : str or path-like
            Destination file (overwritten).

        Returns
        -------
        path : str or path-like
            ``path``, for chaining.
        """
        X = self._validate(X)
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}.")
        gates = self._gates(X)
        predicted = self.classes_.take(predict_proba(self.net_, X).argmax(axis=1))
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["label", "predicted", *(f"expert_{e}" for e in range(self.n_experts))]
            )
            for label, pred, row in zip(y, predicted, gates, strict=True):
                writer.writerow([label, pred, *(f"{g:.6g}" for g in row)])
        return path

    def plot_expert_heatmap(self, X, y, ax=None):
        """Heatmap of :meth:`label_expert_matrix` (labels by experts).

        With guided gating the experts assigned to each label are outlined,
        so a well-trained gate shows a block diagonal inside the outlines.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.
        y : array-like of shape (n_samples,)
            Their labels.
        ax : matplotlib Axes, optional
            Where to draw; a new figure is created when omitted.

        Returns
        -------
        ax : matplotlib Axes
            The axes drawn on.
        """
        try:
            import matplotlib.pyplot as plt
            from matplotlib.patches import Rectangle
        except ImportError as exc:  # pragma: no cover - depends on install
            raise ImportError(
                "plot_expert_heatmap needs matplotlib; install it with "
                "`pip install matplotlib` (or `pip install hemoe_sk[plot]`)."
            ) from exc
        labels, matrix = self.label_expert_matrix(X, y)
        if ax is None:
            _, ax = plt.subplots(
                figsize=(1.2 + 0.6 * self.n_experts, 1.0 + 0.4 * len(labels))
            )
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.figure.colorbar(image, ax=ax, label="mean gate weight")
        ax.set_xticks(range(self.n_experts))
        ax.set_xticklabels([str(e) for e in range(self.n_experts)])
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels([str(label) for label in labels])
        ax.set_xlabel("expert")
        ax.set_ylabel("label")
        ax.set_title(f"Gate weights by label ({self.gating} gating)")
        if self.gating == "guided":
            for e, assigned in enumerate(self.expert_classes_):
                for i, label in enumerate(labels):
                    if label in set(assigned.tolist()):
                        ax.add_patch(
                            Rectangle(
                                (e - 0.5, i - 0.5),
                                1,
                                1,
                                fill=False,
                                edgecolor="white",
                                lw=1.5,
                            )
                        )
        return ax
