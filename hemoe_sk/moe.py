"""Flat mixtures of experts trained end to end: soft, sparse top-k and guided.

:class:`MixtureOfExpertsClassifier` is a scikit-learn classifier around
:class:`~hemoe_sk.nn.moe.MixtureOfExpertsModule`, a torch module with
``n_experts`` small MLP experts and one gating network. Three gating schemes are offered:

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

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ._docstrings import fill_doc
from .base import (
    CLASS_WEIGHT_CONSTRAINT,
    BaseNetEstimator,
    NetClassifierMixin,
    check_layer_sizes,
    keep_state_on_error,
)
from .nn.build import make_classifier_net
from .nn.inference import EVAL_BATCH_SIZE, batched, predict_proba
from .nn.moe import GATINGS, LOSSES, MixtureOfExpertsModule, class_expert_map

# MixtureOfExpertsModule and class_expert_map are also importable from here,
# where hemoe_sk 0.1 defined them (its pickles name them so).
__all__ = ["MixtureOfExpertsClassifier"]


#: Parameter constraints of both flat mixtures (each adds its ``loss``).
FLAT_MOE_CONSTRAINTS = {
    **BaseNetEstimator._parameter_constraints,
    "n_experts": [Interval(Integral, 1, None, closed="left")],
    "expert_hidden": ["array-like"],
    "gate_hidden": ["array-like"],
    "gating": [StrOptions(set(GATINGS))],
    "k": [Interval(Integral, 1, None, closed="left")],
    "balance_weight": [Interval(Real, 0, None, closed="left")],
}


@fill_doc
class FlatMoEMixin:
    """What the flat mixture-of-experts classifier and regressor share.

    ``__init__`` stores the parameters both have (it is the regressor's;
    the classifier's adds its own and calls it). :meth:`_fit_net` checks the
    layer sizes and ``k``, builds the skorch net around the torch module,
    trains it (weighted when given row weights) and keeps it as ``net_``
    with the experts' mean gate weights as ``expert_usage_``;
    :meth:`gate_weights` reads the gate.
    """

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
        max_epochs=100,
        lr=3e-3,
        batch_size="auto",
        optimizer=torch.optim.AdamW,
        early_stopping=0.1,
        patience=20,
        lr_schedule="warmup_cosine",
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
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.early_stopping = early_stopping
        self.patience = patience
        self.lr_schedule = lr_schedule
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _fit_net(self, X, y, make_net, module, n_outputs, weight=None,
                 **module_params):
        expert_hidden = check_layer_sizes(self.expert_hidden, "expert_hidden")
        gate_hidden = check_layer_sizes(self.gate_hidden, "gate_hidden")
        if self.gating == "topk" and self.k > self.n_experts:
            raise ValueError(f"k={self.k} must not exceed n_experts={self.n_experts}.")
        (seed,) = self._draw_seeds(1)
        net = make_net(
            module,
            n_features=X.shape[1],
            module_params=dict(
                n_experts=self.n_experts,
                expert_hidden=expert_hidden,
                gate_hidden=gate_hidden,
                gating=self.gating,
                k=self.k if self.gating == "topk" else 1,
                loss=self.loss,
                balance_weight=self.balance_weight,
                **module_params,
            ),
            **n_outputs,
            **self._net_params(),
        )
        if self.verbose:
            net.set_params(verbose=1)
        # skorch wraps numpy arrays with torch.as_tensor, which warns on
        # read-only buffers (e.g. joblib memmaps): copy only in that case.
        X = np.require(X, requirements=["W"])
        self._train(net, X, y, seed=seed, stage="training", weight=weight)
        self.net_ = net
        self.expert_usage_ = self._gates(X).mean(axis=0).astype(np.float64)

    def _gates(self, X):
        module = self.net_.module_
        out = batched(module, module.gate_weights, X, EVAL_BATCH_SIZE)
        return out.reshape(len(X), self.n_experts)

    def gate_weights(self, X):
        """Gate weight of every expert for every sample (eval mode, no noise).

        %(X_samples)s

        Returns
        -------
        gates : ndarray of shape (n_samples, n_experts)
            Rows sum to one; with top-k gating only ``k`` entries per row are
            non-zero.
        """
        return self._gates(self._validate_X(X))


@fill_doc
class MixtureOfExpertsClassifier(
    ClassifierMixin, FlatMoEMixin, NetClassifierMixin, BaseNetEstimator
):
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
    class_weight : None, "balanced" or dict, default=None
        Weight of each class in the loss (see :doc:`/weights`): ``None``, all
        1; ``"balanced"``, inversely proportional to the class's (weighted)
        frequency, as :func:`sklearn.utils.class_weight.compute_class_weight`;
        a dict ``{label: weight}``, 1 for labels not in it. A row's weight is
        its ``sample_weight`` times its class's weight.
    max_epochs : int, default=100
        Most training epochs (early stopping may end sooner).
    lr : float, default=3e-3
        Peak learning rate of the warm-up + cosine schedule.
    batch_size : int or "auto", default="auto"
        Mini-batch size; ``"auto"`` grows with the rows
        (:func:`~hemoe_sk.nn.recipe.auto_batch_size`).
    optimizer : torch optimizer class, default=torch.optim.AdamW
        Passed as a class, never an instance.
    %(recipe_training)s
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
        :class:`~hemoe_sk.nn.moe.MixtureOfExpertsModule`.
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
      class-to-expert map (:func:`~hemoe_sk.nn.moe.class_expert_map`).

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
        **FLAT_MOE_CONSTRAINTS,
        "loss": [StrOptions(set(LOSSES))],
        "assignment_weight": [Interval(Real, 0, None, closed="left")],
        "diversity_weight": [Interval(Real, 0, None, closed="left")],
        "l2_weight": [Interval(Real, 0, None, closed="left")],
        **CLASS_WEIGHT_CONSTRAINT,
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
        class_weight=None,
        max_epochs=100,
        lr=3e-3,
        batch_size="auto",
        optimizer=torch.optim.AdamW,
        early_stopping=0.1,
        patience=20,
        lr_schedule="warmup_cosine",
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            n_experts,
            expert_hidden=expert_hidden,
            gate_hidden=gate_hidden,
            gating=gating,
            k=k,
            loss=loss,
            balance_weight=balance_weight,
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            early_stopping=early_stopping,
            patience=patience,
            lr_schedule=lr_schedule,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
        self.assignment_weight = assignment_weight
        self.diversity_weight = diversity_weight
        self.l2_weight = l2_weight
        self.class_weight = class_weight

    # -- fitting ----------------------------------------------------------
    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the experts and the gate jointly.

        %(X_training)s
        y : array-like of shape (n_samples,)
            Class labels (any type ``np.unique`` can sort).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row in the loss (times its
            ``class_weight``); rows of weight 0 are left out. The gate's
            auxiliary terms are not weighted. See :doc:`/weights`.

        Returns
        -------
        self : MixtureOfExpertsClassifier
            Fitted estimator.
        """
        X, y_enc, classes, weight = self._validate_weighted_training_data(
            X, y, sample_weight
        )
        n_classes = len(classes)
        self._fit_net(
            X, y_enc, make_classifier_net, MixtureOfExpertsModule,
            {"n_classes": n_classes},
            weight=weight,
            assignment_weight=self.assignment_weight,
            diversity_weight=self.diversity_weight,
            l2_weight=self.l2_weight,
        )
        self.classes_ = classes
        if self.gating == "guided":
            m = class_expert_map(n_classes, self.n_experts)
            self.expert_classes_ = [
                self.classes_[m[:, e] > 0] for e in range(self.n_experts)
            ]
        return self

    # -- prediction -------------------------------------------------------
    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        %(X_samples)s

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to one.
        """
        X = self._validate_X(X)
        return predict_proba(self.net_, X)
