"""Building skorch nets from an estimator's ``embedder`` specification.

* :func:`make_classifier_net` builds a skorch ``NeuralNetClassifier`` with the
  settings hemoe_sk relies on (logits + ``CrossEntropyLoss``, no internal
  validation split, shuffled batches, silent, stopped at a NaN loss);
  :func:`make_regressor_net` the same ``NeuralNetRegressor`` (outputs +
  ``MSELoss``, float32 targets of shape ``(n, n_outputs)``);
* :func:`build_embedder_net` resolves an ``embedder`` parameter (``None``, a
  module class or an unfitted skorch net) into such a net;
* :class:`EmbedderParamsMixin` gives an estimator ``embedder__*`` keyword
  parameters, the way skorch exposes ``module__*``.
"""

from __future__ import annotations

import inspect

import torch
from sklearn.base import clone
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.utils import to_tensor
from torch import nn

from .modules import MLPEmbedder
from .training import FiniteLossGuard

__all__ = [
    "EMBEDDER_PREFIX",
    "EmbedderParamsMixin",
    "HemoeNeuralNetClassifier",
    "HemoeNeuralNetRegressor",
    "build_embedder_net",
    "house_net",
    "make_classifier_net",
    "make_regressor_net",
]

EMBEDDER_PREFIX = "embedder__"


class _HemoeLossMixin:
    """The loss of hemoe_sk's skorch nets: per-row weights and a module's
    auxiliary loss.

    **Row weights.** When the training data is a
    :class:`~hemoe_sk.nn.training.RowSubset` with ``weight``, each batch's
    target is the pair ``(y, w)`` and the loss is the weighted mean of the
    criterion's per-row losses, ``sum_i w_i l_i / sum_i w_i``: with the whole
    set in one batch, an integer weight equals repeating the row, and a
    batch's loss keeps the scale of an unweighted one. The criterion is
    evaluated with ``reduction="none"`` for this (it must have a
    ``reduction`` attribute, as torch's losses do). Unweighted data takes
    skorch's own path, unchanged.

    **Auxiliary loss.** A module may define ``auxiliary_loss(y_true)``
    returning a scalar tensor computed from state it kept during its last
    ``forward`` (DeepMoE's gate sparsity and shallow-embedding losses do
    this). It is added to the criterion's loss during training only, and is
    not weighted (it is a regulariser of the batch, not a per-row loss).
    """

    #: Read by :func:`~hemoe_sk.nn.training.train_net`: this net's loss takes
    #: per-row weights.
    supports_row_weights = True

    def _weighted_loss(self, y_pred, y_true, weight):
        y_true = to_tensor(y_true, device=self.device)
        weight = to_tensor(weight, device=self.device).to(y_pred.dtype)
        criterion = self.criterion_
        if not isinstance(getattr(criterion, "reduction", None), str):
            raise TypeError(
                f"Row weights need per-row losses: the criterion "
                f"{type(criterion).__name__} has no 'reduction' attribute to set to "
                "'none'."
            )
        if isinstance(criterion, nn.NLLLoss):  # skorch's convention: probabilities
            y_pred = torch.log(y_pred + torch.finfo(y_pred.dtype).eps)
        saved = criterion.reduction
        criterion.reduction = "none"
        try:
            per_row = criterion(y_pred, y_true)
        finally:
            criterion.reduction = saved
        per_row = per_row.reshape(len(weight), -1).mean(dim=1)
        return (per_row * weight).sum() / weight.sum().clamp_min(
            torch.finfo(weight.dtype).tiny
        )

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if isinstance(y_true, (list, tuple)):
            y_true, weight = y_true
            loss = self._weighted_loss(y_pred, y_true, weight)
        else:
            loss = super().get_loss(y_pred, y_true, X=X, training=training)
        aux = getattr(self.module_, "auxiliary_loss", None)
        if training and callable(aux):
            loss = loss + aux(to_tensor(y_true, device=self.device))
        return loss


class HemoeNeuralNetClassifier(_HemoeLossMixin, NeuralNetClassifier):
    """skorch classifier with per-row weights and a module's auxiliary loss
    (see :class:`_HemoeLossMixin`)."""


class HemoeNeuralNetRegressor(_HemoeLossMixin, NeuralNetRegressor):
    """skorch regressor with per-row weights and a module's auxiliary loss.

    A module may also replace the criterion during training with its own
    ``regression_loss(y_pred, y_true, weight)`` (the flat MoE's mixture
    likelihood, which needs every expert's output, not only the gated mean
    that ``forward`` returns and ``predict`` reads); ``weight`` is the
    batch's row weights, or ``None`` for unweighted data.
    """

    def get_loss(self, y_pred, y_true, X=None, training=False):
        own = getattr(self.module_, "regression_loss", None)
        if not (training and callable(own)):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        weight = None
        if isinstance(y_true, (list, tuple)):
            y_true, weight = y_true
            weight = to_tensor(weight, device=self.device)
        y_true = to_tensor(y_true, device=self.device)
        loss = own(y_pred, y_true, weight)
        aux = getattr(self.module_, "auxiliary_loss", None)
        return loss + aux(y_true) if callable(aux) else loss


_TRAINING_DEFAULTS = dict(
    max_epochs=10, lr=1e-3, batch_size=64, optimizer=torch.optim.Adam, device="cpu"
)


def house_net(net_class, module, *, criterion, optimizer, lr, max_epochs,
              batch_size, device, callbacks=(), **params):
    """A skorch net with the settings every hemoe_sk net is trained with.

    No internal validation split (``train_split=None``: the estimators hold
    out their own rows), shuffled training batches, silent
    (``verbose=0``), and a :class:`~hemoe_sk.nn.training.FiniteLossGuard`
    that stops at a non-finite loss (the first callback, before
    ``callbacks``). ``params`` are further skorch parameters
    (``module__*``, ``iterator_train``, ...).

    Examples
    --------
    >>> from torch import nn
    >>> from skorch import NeuralNetRegressor
    >>> from hemoe_sk.nn import AutoEncoder
    >>> net = house_net(NeuralNetRegressor, AutoEncoder, criterion=nn.MSELoss,
    ...                 optimizer=torch.optim.Adam, lr=1e-3, max_epochs=2,
    ...                 batch_size=32, device="cpu", module__n_features=4)
    >>> net.train_split is None, [name for name, _ in net.callbacks]
    (True, ['finite_loss'])
    """
    return net_class(
        module,
        criterion=criterion,
        optimizer=optimizer,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[("finite_loss", FiniteLossGuard()), *callbacks],
        device=device,
        verbose=0,
        **params,
    )


def _make_net(net_class, criterion, module, n_features, n_outputs, module_params,
              training):
    unknown = sorted(set(training) - set(_TRAINING_DEFAULTS))
    if unknown:
        raise TypeError(
            f"Unexpected training settings {unknown}: the settings are "
            f"{sorted(_TRAINING_DEFAULTS)}."
        )
    params = {f"module__{k}": v for k, v in (module_params or {}).items()}
    return house_net(
        net_class,
        module,
        criterion=criterion,
        module__n_features=int(n_features),
        module__n_classes=int(n_outputs),
        **{**_TRAINING_DEFAULTS, **training},
        **params,
    )


def make_classifier_net(module, *, n_features, n_classes, module_params=None,
                        **training):
    """Build an (uninitialised) skorch classifier around ``module``.

    ``module`` is a class returning logits; ``n_features`` and ``n_classes``
    are passed to it, together with ``module_params``, and it is trained with
    ``CrossEntropyLoss``. ``training`` takes ``max_epochs`` (default 10),
    ``lr`` (1e-3), ``batch_size`` (64), ``optimizer`` (Adam) and ``device``
    ("cpu").

    Examples
    --------
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> net = make_classifier_net(MLPEmbedder, n_features=4, n_classes=3,
    ...                           module_params={"hidden_dims": (8,)})
    >>> net.initialize().module_.output.out_features
    3
    """
    return _make_net(
        HemoeNeuralNetClassifier, nn.CrossEntropyLoss, module, n_features, n_classes,
        module_params, training,
    )


def make_regressor_net(module, *, n_features, n_outputs, module_params=None,
                       **training):
    """Build an (uninitialised) skorch regressor around ``module``.

    ``module`` is a class with the classifier modules' signature: it gets
    ``n_features`` and ``n_classes=n_outputs`` (its number of outputs),
    together with ``module_params``, and is trained with ``MSELoss`` on
    float32 targets of shape ``(n_samples, n_outputs)``. ``training`` takes
    :func:`make_classifier_net`'s ``max_epochs``, ``lr``, ``batch_size``,
    ``optimizer`` and ``device``, with the same defaults.

    Examples
    --------
    >>> import numpy as np
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> X = np.zeros((8, 4), dtype=np.float32)
    >>> net = make_regressor_net(MLPEmbedder, n_features=4, n_outputs=2,
    ...                          module_params={"hidden_dims": (8,)}, max_epochs=1)
    >>> net.fit(X, np.zeros((8, 2), dtype=np.float32)).predict(X).shape
    (8, 2)
    """
    return _make_net(
        HemoeNeuralNetRegressor, nn.MSELoss, module, n_features, n_outputs,
        module_params, training,
    )


class EmbedderParamsMixin:
    """``embedder__*`` keyword parameters, the way skorch exposes ``module__*``.

    The estimator's ``__init__`` stores its ``**embedder__kwargs`` in
    ``self._embedder_kwargs`` (a private dict: scikit-learn's checks allow no
    undeclared public attribute); ``get_params``/``set_params`` expose them so
    ``clone`` and grid searches keep them, and :meth:`_module_params` checks
    them at fit time. When ``embedder`` is itself an estimator (a skorch net),
    ``embedder__*`` keys are that estimator's nested parameters instead.
    """

    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update(getattr(self, "_embedder_kwargs", {}))
        return params

    def set_params(self, **params):
        nested = hasattr(params.get("embedder", self.embedder), "set_params")
        own = {}
        for key in list(params):
            if key.startswith(EMBEDDER_PREFIX) and not nested:
                own[key] = params.pop(key)
        if params:
            super().set_params(**params)
        if own:
            self._embedder_kwargs = {**getattr(self, "_embedder_kwargs", {}), **own}
        return self

    def _module_params(self):
        """The ``embedder__*`` values keyed by module argument name."""
        kwargs = getattr(self, "_embedder_kwargs", {})
        bad = [
            k for k in kwargs if not k.startswith(EMBEDDER_PREFIX) or k == EMBEDDER_PREFIX
        ]
        if bad:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {bad}: only "
                f"'{EMBEDDER_PREFIX}<name>' keywords are forwarded to the embedder "
                "module."
            )
        return {k[len(EMBEDDER_PREFIX) :]: v for k, v in kwargs.items()}


def _accepts(cls, name):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_embedder_net(
    embedder,
    *,
    n_features,
    n_classes,
    embedder_params=None,
    regression=False,
    **training,
):
    """Resolve an ``embedder`` parameter into an unfitted skorch classifier
    (or regressor).

    Parameters
    ----------
    embedder : None, nn.Module subclass or skorch NeuralNet
        ``None`` builds :class:`~hemoe_sk.nn.MLPEmbedder`. A module class is
        wrapped with :func:`make_classifier_net` and configured with
        ``embedder_params``. A skorch net is cloned (never mutated) and keeps
        its own training settings; ``n_features``/``n_classes`` are filled in
        when its module accepts them and the net does not set them.
    n_features, n_classes : int
        Input size and number of classes (of regression outputs).
    embedder_params : dict, optional
        Module arguments (the estimator's ``embedder__*`` values).
    regression : bool, default=False
        Build a module class into :func:`make_regressor_net` (``MSELoss``)
        instead of :func:`make_classifier_net`.
    **training
        ``max_epochs``, ``lr``, ``batch_size``, ``optimizer``, ``device`` for
        :func:`make_classifier_net` (ignored for a skorch net).
    """
    if embedder is None:
        embedder = MLPEmbedder
    if isinstance(embedder, type) and issubclass(embedder, nn.Module):
        if regression:
            return make_regressor_net(
                embedder,
                n_features=n_features,
                n_outputs=n_classes,
                module_params=embedder_params,
                **training,
            )
        return make_classifier_net(
            embedder,
            n_features=n_features,
            n_classes=n_classes,
            module_params=embedder_params,
            **training,
        )
    if isinstance(embedder, NeuralNet):
        if regression and isinstance(embedder, NeuralNetClassifier):
            raise TypeError(
                "A regressor's embedder cannot be a skorch NeuralNetClassifier; "
                "pass a NeuralNetRegressor or a module class."
            )
        if embedder_params:
            raise ValueError(
                "embedder__* parameters configure a module class; with a skorch "
                "net, set module__* parameters on the net itself."
            )
        net = clone(embedder)
        params = net.get_params(deep=False)
        extra = {}
        module = params["module"]
        for name, value in (("n_features", n_features), ("n_classes", n_classes)):
            key = f"module__{name}"
            if key not in params and isinstance(module, type) and _accepts(module, name):
                extra[key] = int(value)
        return net.set_params(**extra) if extra else net
    raise TypeError(
        "embedder must be None, a torch nn.Module subclass (not an instance) or "
        f"an unfitted skorch NeuralNet; got {type(embedder).__name__}."
    )
