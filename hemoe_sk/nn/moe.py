"""Torch module of the flat mixture of experts: experts, gate, gating losses.

:class:`MixtureOfExpertsModule` holds ``n_experts`` small MLP experts and one
gating network. Its ``forward`` returns *scores whose softmax is the predicted
distribution* (log mixture probabilities, or weighted logits), so a skorch
classifier with ``CrossEntropyLoss`` trains the exact mixture losses, and its
``auxiliary_loss`` adds the gating terms (load balancing for top-k gating,
assignment, diversity and L2 terms for guided gating) during training. The
estimator around it is :class:`hemoe_sk.MixtureOfExpertsClassifier`.
:class:`MixtureOfExpertsRegressionModule` reuses its experts and gating for
regression (:class:`hemoe_sk.MixtureOfExpertsRegressor`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .modules import mlp

__all__ = [
    "GATINGS",
    "LOSSES",
    "REGRESSION_GATINGS",
    "REGRESSION_LOSSES",
    "MixtureOfExpertsModule",
    "MixtureOfExpertsRegressionModule",
    "class_expert_map",
]

GATINGS = ("soft", "topk", "guided")
LOSSES = ("mixture_nll", "weighted_output")


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
        self.body = mlp(n_features, hidden, 0.0)
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
        if gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, got {gating!r}.")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
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
        self.gate_body = mlp(n_features, gate_hidden, 0.0)
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


#: Gatings and losses of :class:`MixtureOfExpertsRegressionModule`.
REGRESSION_GATINGS = ("soft", "topk")
REGRESSION_LOSSES = ("mixture_nll", "mse")


class MixtureOfExpertsRegressionModule(MixtureOfExpertsModule):
    """The flat mixture of experts for regression (Jacobs et al., 1991).

    Every expert outputs a mean :math:`\\mu_i(x)` for all ``n_classes``
    targets (the name is the classifier modules'; here it counts outputs);
    ``forward`` returns the gated mean :math:`\\sum_i g_i(x) \\mu_i(x)`, which
    is the prediction. With ``loss="mixture_nll"``, :meth:`regression_loss`
    is the original competitive loss, the negative log-likelihood of a
    gate-weighted mixture of unit-variance Gaussians,
    :math:`-\\log \\sum_i g_i(x) \\exp(-\\tfrac12 \\lVert y - \\mu_i(x)
    \\rVert^2)` (up to a constant), under which each expert is pulled only
    toward the samples the gate gives it; ``loss="mse"`` is the squared
    error of the gated mean (the "cooperative" error). Top-k gating adds the
    load-balancing terms through :meth:`auxiliary_loss`. Guided gating
    assigns classes to experts, so it is not offered. The other keyword
    arguments are :class:`MixtureOfExpertsModule`'s.
    """

    def __init__(self, n_features, n_classes, gating="soft", loss="mixture_nll",
                 **kwargs):
        if gating not in REGRESSION_GATINGS:
            raise ValueError(
                f"gating={gating!r} is not available for regression: "
                f"use one of {REGRESSION_GATINGS} ('guided' assigns classes to "
                "experts)."
            )
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {loss!r}.")
        super().__init__(
            n_features, n_classes, gating=gating, loss="weighted_output", **kwargs
        )
        self.loss = loss

    def forward(self, x):
        idx, log_w = self._route(x)
        means = self._per_expert(x, idx, lambda expert, xb: expert(xb))
        if self.training:
            self._cache["mixture"] = (log_w, means)
        return (log_w.exp().unsqueeze(-1) * means).sum(dim=1)

    def regression_loss(self, y_pred, y_true, weight=None):
        """The training loss of the last batch (``forward`` kept its parts).

        With ``weight`` (one per row), the weighted mean of the rows' losses,
        ``sum_i w_i l_i / sum_i w_i``, as the other hemoe_sk nets weight
        theirs; without it, their plain mean.
        """
        y_true = y_true.reshape(y_pred.shape).to(y_pred.dtype)
        if self.loss == "mse" or "mixture" not in self._cache:
            per_row = ((y_pred - y_true) ** 2).mean(dim=-1)
        else:
            log_w, means = self._cache["mixture"]
            sq = ((y_true.unsqueeze(1) - means) ** 2).sum(dim=-1)
            per_row = -torch.logsumexp(log_w - 0.5 * sq, dim=1)
        if weight is None:
            return per_row.mean()
        weight = weight.to(per_row.dtype)
        return (per_row * weight).sum() / weight.sum().clamp_min(
            torch.finfo(weight.dtype).tiny
        )
