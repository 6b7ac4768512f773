"""Flat mixture of experts for regression, trained end to end.

:class:`MixtureOfExpertsRegressor` is a scikit-learn regressor around
:class:`~hemoe_sk.nn.moe.MixtureOfExpertsRegressionModule`: ``n_experts``
small MLP experts, each predicting every target, and one gating network
(softmax, or sparse noisy top-k). The prediction is the gate-weighted mean of
the experts' predictions.
"""

from __future__ import annotations

from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import StrOptions

from ._docstrings import fill_doc
from .base import BaseNetEstimator, NetRegressorMixin, keep_state_on_error
from .moe import FLAT_MOE_CONSTRAINTS, FlatMoEMixin
from .nn.build import make_regressor_net
from .nn.inference import predict_output
from .nn.moe import (
    REGRESSION_GATINGS,
    REGRESSION_LOSSES,
    MixtureOfExpertsRegressionModule,
)

__all__ = ["MixtureOfExpertsRegressor"]


@fill_doc
class MixtureOfExpertsRegressor(
    RegressorMixin, FlatMoEMixin, NetRegressorMixin, BaseNetEstimator
):
    """Mixture of MLP regression experts with a learned gate (Jacobs et al. 1991).

    Targets are standardised for training (``y_mean_``, ``y_scale_``); every
    expert predicts all of them, and the gate weights the experts per sample.

    Parameters
    ----------
    n_experts : int, default=4
        Number of experts.
    expert_hidden : tuple of int, default=(64,)
        Hidden layer sizes of every expert; ``()`` gives linear experts.
    gate_hidden : tuple of int, default=(32,)
        Hidden layer sizes of the gating network; ``()`` gives a linear gate.
    gating : {"soft", "topk"}, default="soft"
        ``"soft"``: softmax gate over all experts; ``"topk"``: noisy top-k
        gating with load balancing, only the selected experts run (Shazeer et
        al., 2017). ``"guided"`` (the classifier's label-guided gate) is
        refused (``InvalidParameterError``, a ValueError): regression has no
        classes to assign to experts.
    k : int, default=2
        Experts used per sample with ``gating="topk"``; must not exceed
        ``n_experts``. Ignored otherwise.
    loss : {"mixture_nll", "mse"}, default="mixture_nll"
        ``"mixture_nll"``: the negative log-likelihood of the gate-weighted
        mixture of unit-variance Gaussians centred on the experts'
        predictions (in standardised units), Jacobs et al.'s competitive
        loss, which lets each expert specialise on the samples its gate
        gives it. ``"mse"``: the squared error of the gated mean (the
        cooperative loss). Prediction is the gated mean with either.
    balance_weight : float, default=0.1
        Weight of the top-k importance and load losses.
    max_epochs : int, default=100
    lr : float, default=3e-3
    batch_size : int or "auto", default="auto"
    optimizer : torch optimizer class, default=torch.optim.AdamW
    %(recipe_training)s
    device : str, default="cpu"
        Torch device; ``"auto"`` picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, batch order and gate noise.
    verbose : int, default=0
        ``0`` is silent; ``>0`` prints skorch's per-epoch table.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Feature names, when ``X`` had string column names.
    n_outputs_ : int
        Number of targets.
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        Mean and standard deviation (1 where 0) of the training targets.
    y_ndim_ : int
        1 or 2, the dimension of the ``y`` given to fit (and of predictions).
    net_ : HemoeNeuralNetRegressor
        The trained skorch net; ``net_.module_`` is a
        :class:`~hemoe_sk.nn.moe.MixtureOfExpertsRegressionModule`.
    expert_usage_ : ndarray of shape (n_experts,)
        Mean gate weight of each expert on the training data (sums to 1).

    Examples
    --------
    >>> import numpy as np
    >>> from hemoe_sk import MixtureOfExpertsRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, size=(400, 2))
    >>> y = np.where(X[:, 0] > 0, 3 * X[:, 1], -2 * X[:, 1] + 1)
    >>> reg = MixtureOfExpertsRegressor(n_experts=2, max_epochs=60, random_state=0)
    >>> reg.fit(X, y).score(X, y) > 0.8
    True
    >>> reg.gate_weights(X[:2]).shape
    (2, 2)
    """

    _parameter_constraints = {
        **FLAT_MOE_CONSTRAINTS,
        # "guided" assigns classes to experts: a classifier's gate only.
        "gating": [StrOptions(set(REGRESSION_GATINGS))],
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
    }

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the experts and the gate jointly.

        %(X_training)s
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Real-valued targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row in the loss, and in the mean and
            scale the targets are standardised with; rows of weight 0 are
            left out. The top-k balancing terms are not weighted. See
            :doc:`/weights`.

        Returns
        -------
        self : MixtureOfExpertsRegressor
            Fitted estimator.
        """
        X, Y, target_info, weight = self._validate_weighted_training_data(
            X, y, sample_weight
        )
        self._fit_net(
            X, Y, make_regressor_net, MixtureOfExpertsRegressionModule,
            {"n_outputs": Y.shape[1]}, weight=weight,
        )
        self._set_target_attributes(target_info)
        return self

    def predict(self, X):
        """Gate-weighted mean of the experts' predictions.

        %(X_samples)s

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The shape of the ``y`` the model was fitted on.
        """
        X = self._validate_X(X)
        return self._to_targets(predict_output(self.net_, X))
