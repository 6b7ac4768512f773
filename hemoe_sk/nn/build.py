"""Building skorch nets from an estimator's ``embedder`` specification.

* :func:`make_classifier_net` builds a skorch ``NeuralNetClassifier`` with the
  settings hemoe_sk relies on (logits + ``CrossEntropyLoss``, no internal
  validation split, shuffled batches, silent, stopped at a NaN loss);
  :func:`make_regressor_net` the same ``NeuralNetRegressor`` (outputs +
  ``MSELoss``, float32 targets of shape ``(n, n_outputs)``);
* :func:`build_embedder_net` resolves an ``embedder`` parameter (``None``, a
  module class or an unfitted skorch net) into such a net;
* :class:`EmbedderParamsMixin` gives an estimator ``embedder__*`` keyword
  parameters, the way skorch exposes ``module__*``;
* :class:`_RecipeMixin`, part of both hemoe_sk nets, is the training recipe:
  input scaling fitted on the training rows, early stopping on held-out rows
  restoring the best epoch, the learning-rate schedule, the automatic batch
  size, and batches sliced from the arrays (see :doc:`/recipe`).
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import torch
from sklearn.base import clone
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.utils import to_tensor
from torch import nn

from .recipe import TabularEmbedder, auto_batch_size, warmup_cosine
from .training import FiniteLossGuard, RowSubset

__all__ = [
    "EMBEDDER_PREFIX",
    "LR_SCHEDULES",
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


#: Learning-rate schedules of hemoe_sk's nets (``lr_schedule``): a function
#: of training progress in [0, 1] giving the factor of ``lr``.
LR_SCHEDULES = {"warmup_cosine": warmup_cosine, "constant": lambda progress: 1.0}

#: Batch size of the validation passes of early stopping.
_EVAL_BATCH = 4096

#: Least number of held-out rows (and of rows left to train on) for early
#: stopping; smaller fits train every epoch.
_MIN_VALID_ROWS = 10


class _RowBatches:
    """Mini-batches of a :class:`~hemoe_sk.nn.training.RowSubset`, sliced from
    its arrays (no per-row items, no collate): ``(x, y)`` or ``(x, (y, w))``.
    Shuffled with torch's RNG when ``shuffle``."""

    def __init__(self, dataset, batch_size, shuffle):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle

    def __len__(self):
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        ds = self.dataset
        n = len(ds)
        order = torch.randperm(n).numpy() if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            # in row order within the batch (memory locality, and the same
            # summation order for a weighted row and its repeated copies)
            rows = ds.rows[np.sort(order[start:start + self.batch_size])]
            xb = torch.as_tensor(np.asarray(ds.X[rows]))
            yb = torch.as_tensor(np.asarray(ds.y[rows]))
            if ds.weight is None:
                yield xb, yb
            else:
                yield xb, (yb, torch.as_tensor(ds.weight[rows]))


def _holdout(dataset, fraction, stratify, seed):
    """``(train, valid)`` RowSubsets of ``dataset``, ``valid`` about
    ``fraction`` of its rows (stratified by class when ``stratify`` and every
    class has two rows), or ``None`` when either part would be too small."""
    n = len(dataset)
    n_valid = int(round(fraction * n))
    if n_valid < _MIN_VALID_ROWS or n - n_valid < _MIN_VALID_ROWS:
        return None
    from sklearn.model_selection import train_test_split

    positions = np.arange(n)
    labels = None
    if stratify:
        labels = np.asarray(dataset.y[dataset.rows])
        counts = np.unique(labels, return_counts=True)[1]
        if labels.ndim != 1 or counts.min() < 2 or len(counts) > n_valid:
            labels = None
    fit, valid = train_test_split(
        positions, test_size=n_valid, stratify=labels, random_state=seed
    )
    weight = dataset.weight

    def part(pos):
        return RowSubset(dataset.X, dataset.y, dataset.rows[np.sort(pos)], weight=weight)

    if weight is not None and not (weight[dataset.rows[valid]] > 0).any():
        return None
    return part(fit), part(valid)


class _RecipeMixin:
    """The training recipe of hemoe_sk's skorch nets.

    * **Input scaling fitted on the training rows**: ``fit`` (not
      ``partial_fit``, so fine-tuned experts keep their parent's scaling)
      calls the module's ``fit_input_scaling(X, weight)`` when it has one,
      on the rows it trains on, after initialising the module.
    * **Early stopping** (``validation_fraction > 0``): every ``fit`` or
      ``partial_fit`` holds out that share of its rows (stratified by class
      for a classifier, drawn from the seeded torch RNG), stops after
      ``patience`` epochs without a lower held-out loss and restores the
      weights of the best epoch (``best_epoch_``, 1-based, counted in this
      call); a classifier's epochs are ranked by held-out (weighted) error,
      ties broken by the loss. Fits with fewer than 10 rows for either part
      train every epoch.
    * **Learning-rate schedule** (``lr_schedule``): the factor of ``lr`` at
      each batch, a function of the call's progress (see
      :data:`LR_SCHEDULES`); ``None`` keeps ``lr`` fixed.
    * **Batch size** ``"auto"``: :func:`~hemoe_sk.nn.recipe.auto_batch_size`
      of the rows the call trains on.

    Datasets that are :class:`~hemoe_sk.nn.training.RowSubset` (and numpy
    ``(X, y)``, wrapped into one) are batched by slicing, without skorch's
    per-row items.
    """

    def __init__(self, *args, validation_fraction=0.0, patience=10,
                 lr_schedule=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.lr_schedule = lr_schedule

    @property
    def _default_callbacks(self):
        # skorch's valid_acc scores a second pass over the held-out rows and
        # cannot read weighted targets; validation_step records the error.
        return [(name, cb) for name, cb in super()._default_callbacks
                if name != "valid_acc"]

    # -- data ---------------------------------------------------------------
    def get_dataset(self, X, y=None):
        if (
            isinstance(X, np.ndarray) and X.ndim == 2 and y is not None
            and isinstance(y, np.ndarray) and len(y) == len(X)
        ):
            return RowSubset(X, y, np.arange(len(X)))
        return super().get_dataset(X, y)

    def _train_batch_size(self, n_rows):
        if self.batch_size == "auto":
            return auto_batch_size(n_rows)
        return n_rows if self.batch_size == -1 else int(self.batch_size)

    def get_iterator(self, dataset, training=False):
        if training:
            batch_size = self._train_batch_size(len(dataset))
        else:
            batch_size = max(self._train_batch_size(len(dataset)), _EVAL_BATCH)
        if isinstance(dataset, RowSubset):
            return _RowBatches(dataset, batch_size, shuffle=training)
        saved = self.batch_size
        self.batch_size = batch_size
        try:
            return super().get_iterator(dataset, training=training)
        finally:
            self.batch_size = saved

    def get_split_datasets(self, X, y=None, **fit_params):
        fraction = float(getattr(self, "validation_fraction", 0.0) or 0.0)
        dataset = self.get_dataset(X, y)
        if fraction > 0 and isinstance(dataset, RowSubset):
            seed = int(torch.randint(np.iinfo(np.int32).max, (1,)).item())
            split = _holdout(
                dataset, fraction, isinstance(self, NeuralNetClassifier), seed
            )
            if split is not None:
                self.n_train_rows_ = len(split[0])
                return split
        self.n_train_rows_ = len(dataset)
        return dataset, None

    # -- fit ----------------------------------------------------------------
    def fit(self, X, y=None, **fit_params):
        if not self.warm_start or not self.initialized_:
            self.initialize()
        scale = getattr(self.module_, "fit_input_scaling", None)
        if isinstance(self.module, type) and callable(scale):
            if isinstance(X, RowSubset):
                weight = None if X.weight is None else X.weight[X.rows]
                scale(np.asarray(X.X[X.rows]), weight)
            elif isinstance(X, np.ndarray):
                scale(X)
        return self.partial_fit(X, y, **fit_params)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        self.planned_epochs_ = int(self.max_epochs if epochs is None else epochs)
        return super().fit_loop(X, y, epochs=epochs, **fit_params)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self.step_ = 0
        self.best_loss_ = (math.inf, math.inf)
        self.best_epoch_ = None
        self.best_state_ = None
        self.misses_ = 0
        self.epochs_run_ = 0

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)
        schedule = getattr(self, "lr_schedule", None)
        if not training or schedule is None:
            return
        per_epoch = -(-self.n_train_rows_ // self._train_batch_size(self.n_train_rows_))
        total = max(1, self.planned_epochs_ * per_epoch)
        factor = LR_SCHEDULES[schedule](self.step_ / total)
        for group in self.optimizer_.param_groups:
            group["lr"] = self.lr * factor
        self.step_ += 1

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_end(
            net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs
        )
        self.epochs_run_ += 1
        batches = [b for b in self.history[-1, "batches"] if "valid_loss" in b]
        if dataset_valid is None or not batches:
            return
        # The epoch's held-out loss (skorch's own valid_loss is recorded by a
        # callback, after this hook): the mean over rows of the batches'; a
        # classifier ranks epochs by held-out error first.
        sizes = np.array([b["valid_batch_size"] for b in batches], dtype=np.float64)

        def mean(key):
            values = np.array([b[key] for b in batches], dtype=np.float64)
            return float((values * sizes).sum() / sizes.sum())

        loss = (mean("valid_error") if "valid_error" in batches[0] else 0.0,
                mean("valid_loss"))
        if loss < self.best_loss_:
            self.best_loss_ = loss
            self.best_epoch_ = self.epochs_run_
            self.best_state_ = copy.deepcopy(self.module_.state_dict())
            self.misses_ = 0
        else:
            self.misses_ += 1
            if self.patience is not None and self.misses_ >= self.patience:
                raise KeyboardInterrupt  # skorch's way to end training early

    def validation_step(self, batch, **fit_params):
        step = super().validation_step(batch, **fit_params)
        if isinstance(self, NeuralNetClassifier):
            y_true = batch[1]
            weight = None
            if isinstance(y_true, (list, tuple)):
                y_true, weight = y_true
            wrong = (step["y_pred"].argmax(dim=1).cpu() != torch.as_tensor(y_true))
            wrong = wrong.to(torch.float64)
            if weight is None:
                error = wrong.mean()
            else:
                weight = torch.as_tensor(weight, dtype=torch.float64)
                error = (wrong * weight).sum() / weight.sum().clamp_min(1e-300)
            self.history.record_batch("valid_error", float(error))
        return step

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        if getattr(self, "best_state_", None) is not None:
            self.module_.load_state_dict(self.best_state_)
            self.best_state_ = None  # restored: do not keep a second copy


class HemoeNeuralNetClassifier(_HemoeLossMixin, _RecipeMixin, NeuralNetClassifier):
    """skorch classifier with per-row weights and a module's auxiliary loss
    (see :class:`_HemoeLossMixin`)."""


class HemoeNeuralNetRegressor(_HemoeLossMixin, _RecipeMixin, NeuralNetRegressor):
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
    max_epochs=10, lr=1e-3, batch_size=64, optimizer=torch.optim.Adam, device="cpu",
    validation_fraction=0.0, patience=10, lr_schedule=None,
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
    ``lr`` (1e-3), ``batch_size`` (64, or ``"auto"``), ``optimizer`` (Adam),
    ``device`` ("cpu"), and the recipe's ``validation_fraction`` (0.0: no
    early stopping), ``patience`` (10) and ``lr_schedule`` (``None``), see
    :class:`_RecipeMixin`.

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
    X=None,
    **training,
):
    """Resolve an ``embedder`` parameter into an unfitted skorch classifier
    (or regressor).

    Parameters
    ----------
    embedder : None, nn.Module subclass or skorch NeuralNet
        ``None`` builds :class:`~hemoe_sk.nn.TabularEmbedder`. A module class is
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
    X : ndarray of shape (n_samples, n_features), optional
        The training rows. A module class with a ``data_defaults(X)``
        classmethod (:class:`~hemoe_sk.nn.TabularEmbedder`) takes the module
        arguments it returns, unless ``embedder_params`` sets them.
    **training
        ``max_epochs``, ``lr``, ``batch_size``, ``optimizer``, ``device``,
        ``validation_fraction``, ``patience``, ``lr_schedule`` for
        :func:`make_classifier_net` (ignored for a skorch net).
    """
    if embedder is None:
        embedder = TabularEmbedder
    if isinstance(embedder, type) and issubclass(embedder, nn.Module):
        defaults = getattr(embedder, "data_defaults", None)
        if X is not None and callable(defaults):
            embedder_params = {**defaults(X), **(embedder_params or {})}
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
