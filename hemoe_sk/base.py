"""What hemoe_sk's neural-network estimators share.

:class:`BaseNetEstimator` is task-agnostic: the training knobs every net
estimator has (``max_epochs``, ``lr``, ``batch_size``, ``optimizer``,
``device``, ``random_state``, ``verbose``) with one set of parameter
constraints, their translation into skorch settings (device resolved once),
seeds drawn without touching numpy's global RNG, and training through
:func:`~hemoe_sk.nn.training.train_net` (a NaN loss is retried once at a
tenth of the learning rate). :class:`NetClassifierMixin` adds what is
specific to classification: label encoding with the classic checks (at least
two samples and two classes, no NaN, matching lengths) and ``predict`` and
``predict_log_proba`` derived from ``predict_proba``. :class:`NetRegressorMixin`
does the same for regression: numeric, finite 1-D or 2-D targets,
standardised for training (so one learning rate fits every target scale),
and predictions put back on the targets' scale and shape.

A subclass lists its own parameters in ``__init__`` (scikit-learn reads them
from its signature) and builds its constraints from the shared ones::

    _parameter_constraints = {
        **BaseNetEstimator._parameter_constraints,
        **EMBEDDER_CONSTRAINT,            # if it takes an ``embedder``
        "n_experts": [Interval(Integral, 1, None, closed="left")],
    }

This module sits between :mod:`hemoe_sk.nn` and the estimators: it imports
only ``nn/``, and the estimators and clusterers import it.
"""

from __future__ import annotations

import functools
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)
from skorch import NeuralNet

from ._docstrings import fill_doc
from .nn.training import MAX_SEED, RowSubset, resolve_device, seed_source, train_net

__all__ = [
    "CLASS_WEIGHT_CONSTRAINT",
    "EMBEDDER_CONSTRAINT",
    "N_JOBS_CONSTRAINT",
    "BaseNetEstimator",
    "NetClassifierMixin",
    "NetRegressorMixin",
    "check_layer_sizes",
    "encode_labels",
    "keep_state_on_error",
]

#: Constraint of ``embedder``, for the estimators that take one: ``None``
#: (an :class:`~hemoe_sk.nn.MLPEmbedder`), a torch module class, or an
#: unfitted skorch net.
EMBEDDER_CONSTRAINT = {"embedder": [None, type, NeuralNet]}

#: Constraint of ``class_weight``, for the classifiers: ``None`` (every class
#: weighs 1), ``"balanced"`` or a dict ``{label: weight}``.
CLASS_WEIGHT_CONSTRAINT = {"class_weight": [None, dict, StrOptions({"balanced"})]}

#: Constraint of ``n_jobs``, for the estimators that run work in parallel.
N_JOBS_CONSTRAINT = {"n_jobs": [None, Integral]}


def keep_state_on_error(fit):
    """Decorate an estimator's ``fit`` so that a failure changes nothing.

    ``validate_data`` sets ``n_features_in_`` (and ``feature_names_in_``)
    before any training; if ``fit`` then fails, the estimator's previous
    attributes are put back, so a fitted estimator keeps predicting as before
    and an unfitted one stays unfitted, never a mix of the two.
    """

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    return wrapper


def encode_labels(y):
    """Check classification targets; return ``(classes, codes as int64)``.

    scikit-learn's ``check_classification_targets`` and ``np.unique`` fail
    with an opaque ``'<' not supported`` when labels mix strings and numbers;
    this says so instead.

    Examples
    --------
    >>> classes, codes = encode_labels(["b", "a", "b"])
    >>> classes.tolist(), codes.tolist()
    (['a', 'b'], [1, 0, 1])
    """
    try:
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in np.asarray(y, dtype=object).ravel()})
        raise TypeError(
            f"y mixes label types {kinds}: labels must be all strings or all "
            "numbers."
        ) from None
    return classes, codes.astype(np.int64)


def check_layer_sizes(sizes, name):
    """``sizes`` as a tuple of positive ints (may be empty), or a ValueError.

    Examples
    --------
    >>> check_layer_sizes([64, 32], "hidden_dims")
    (64, 32)
    """
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = None
    if sizes is None or not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise ValueError(f"{name} must be a tuple of positive ints; got {sizes!r}.")
    return tuple(int(s) for s in sizes)


class BaseNetEstimator(BaseEstimator):
    """Shared training knobs and plumbing of hemoe_sk's net estimators.

    Not an estimator by itself: a subclass defines ``__init__`` (storing
    these knobs among its own), ``fit`` and the prediction methods.

    The parameters below are not taken by this class (it has no
    ``__init__``): they are the knobs every subclass takes and stores, with
    the constraints given here.

    Parameters
    ----------
    max_epochs : int
        Most training epochs (>= 1); early stopping may end sooner.
    lr : float
        Peak learning rate (> 0) of the warm-up + cosine schedule.
    batch_size : int or "auto"
        Mini-batch size (>= 1); ``"auto"``: the power of two nearest to the
        square root of the rows a net trains on, between 32 and 1024
        (:func:`~hemoe_sk.nn.recipe.auto_batch_size`).
    early_stopping : float in [0, 1)
        Share of the rows each net trains on that it holds out to stop
        training after ``patience`` epochs without a lower held-out loss,
        restoring its best epoch; ``0`` trains every epoch. Nets with fewer
        than 10 rows for either part train every epoch.
    patience : int
        Epochs without improvement before early stopping (>= 1).
    lr_schedule : {"warmup_cosine", "constant"}
        ``"warmup_cosine"``: linear warm-up over the first 5% of each training
        call's batches, then cosine decay to 0; ``"constant"``: ``lr``
        throughout.
    optimizer : torch optimizer class
        Passed as a class, never an instance.
    device : str, torch.device or None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"``/``None`` for CUDA
        when available. A CUDA device on a machine without CUDA falls back to
        the CPU with a warning.
    random_state : int, RandomState instance or None
        Seeds every network; the global torch and numpy RNGs are left as
        they were.
    verbose : int
        ``0`` is silent.
    """

    _parameter_constraints: dict = {
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "early_stopping": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "lr_schedule": [StrOptions({"warmup_cosine", "constant"})],
        "optimizer": [callable],
        "device": [str, torch.device, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _net_params(self):
        """The shared knobs as keyword arguments of
        :func:`~hemoe_sk.nn.build.make_classifier_net` (device resolved)."""
        return {
            "max_epochs": self.max_epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "device": resolve_device(self.device),
            "validation_fraction": float(getattr(self, "early_stopping", 0.0)),
            "patience": int(getattr(self, "patience", 10)),
            "lr_schedule": getattr(self, "lr_schedule", "warmup_cosine"),
        }

    def _draw_seeds(self, n):
        """``n`` integer seeds from ``random_state``; ``np.random`` untouched."""
        return [int(s) for s in seed_source(self.random_state).randint(MAX_SEED, size=n)]

    def _train(self, net, X, y=None, *, seed, stage, weight=None, **kwargs):
        """:func:`~hemoe_sk.nn.training.train_net` (NaN loss retried once at
        ``lr / 10``), with the estimator's name in the stage of any message.

        ``weight`` (one per row of ``X``) trains on the weighted loss, through
        a :class:`~hemoe_sk.nn.training.RowSubset`; ``None`` passes ``(X, y)``
        to skorch as they are."""
        if weight is not None:
            X, y = RowSubset(X, y, np.arange(len(X)), weight=weight), None
        return train_net(
            net, X, y, seed=seed, stage=f"{type(self).__name__} {stage}", **kwargs
        )

    def _validate_X(self, X):
        """Check fitted, then validate ``X`` against the training features."""
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float32)


@fill_doc
class NetClassifierMixin:
    """Classification on top of :class:`BaseNetEstimator`.

    Put it after ``ClassifierMixin`` and before the base::

        class MyNetClassifier(ClassifierMixin, NetClassifierMixin, BaseNetEstimator):
            ...

    A subclass implements ``predict_proba`` (columns in the order of
    ``classes_``); ``predict`` and ``predict_log_proba`` follow from it.
    """

    def _validate_training_data(self, X, y):
        """Validate ``(X, y)`` and encode ``y``.

        Returns ``(X, y_codes, classes)``: ``X`` as float32, ``y_codes`` the
        int64 index of each label in ``classes``. Raises a ValueError for
        fewer than two samples or a single class.
        """
        X, y = validate_data(self, X, y, dtype=np.float32)
        if len(X) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples; got "
                f"n_samples = {len(X)}."
            )
        classes, y_enc = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; got "
                f"1 class only ({classes.tolist()[0]!r})."
            )
        return X, y_enc, classes

    def _row_weights(self, y_enc, classes, sample_weight):
        """Effective weight of every training row (``None``: unweighted).

        The weight of a row is its ``sample_weight`` (1 when ``None``) times
        its class's weight from ``self.class_weight``: ``None`` (1 for every
        class), ``"balanced"`` (as in
        :func:`sklearn.utils.class_weight.compute_class_weight`, with classes
        counted by their summed sample weights, so that an integer weight
        still equals a repeated row) or a dict ``{label: weight}`` (labels
        not in it weigh 1).

        Returns ``None`` when neither ``sample_weight`` nor ``class_weight``
        is given, else an array of shape ``(n_samples,)``.

        Raises a ValueError for weights of the wrong shape, negative, NaN or
        infinite, all zero, and for dict keys that are not labels of ``y``.
        """
        class_weight = getattr(self, "class_weight", None)
        if sample_weight is None and class_weight is None:
            return None
        n_classes = len(classes)
        weight = _check_sample_weight(
            sample_weight, y_enc, dtype=np.float64, ensure_non_negative=True
        )
        if isinstance(class_weight, dict):
            labels = classes.tolist()
            unknown = [k for k in class_weight if k not in labels]
            if unknown:
                raise ValueError(
                    f"class_weight has keys {unknown} that are not labels of y; the "
                    f"labels are {labels}."
                )
            per_class = np.ones(n_classes)
            for i, label in enumerate(labels):
                value = class_weight.get(label, 1.0)
                if (
                    not isinstance(value, Real)
                    or isinstance(value, bool)
                    or not np.isfinite(value)
                    or value < 0
                ):
                    raise ValueError(
                        f"class_weight[{label!r}] must be a finite number >= 0; got "
                        f"{value!r}."
                    )
                per_class[i] = float(value)
            weight = weight * per_class[y_enc]
        elif class_weight == "balanced":
            positive = weight > 0
            present = np.flatnonzero(np.bincount(y_enc[positive], minlength=n_classes))
            balanced = compute_class_weight(
                "balanced",
                classes=present,
                y=y_enc[positive],
                sample_weight=weight[positive],
            )
            per_class = np.ones(n_classes)
            per_class[present] = balanced
            weight = weight * per_class[y_enc]
        if not (weight > 0).any():
            raise ValueError(
                "The effective sample weights (sample_weight times class_weight) are "
                "all zero: at least one row must weigh more than zero."
            )
        return weight

    def _validate_weighted_training_data(self, X, y, sample_weight=None):
        """:meth:`_validate_training_data`, then the row weights.

        Returns ``(X, y_codes, classes, weight)``. Rows of weight 0 are
        dropped from ``X`` and ``y_codes``, so that they change nothing, not
        even a random split; ``weight`` holds the weights of the rows kept, or
        is ``None`` when they all weigh exactly 1 (no weights given, or
        weights of 0 and 1 only): the fit then takes the unweighted code path
        and equals the unweighted fit on the rows kept. ``classes`` still
        lists every label of ``y``. Raises a ValueError when fewer than two
        classes keep a positive weight.
        """
        X, y_enc, classes = self._validate_training_data(X, y)
        weight = self._row_weights(y_enc, classes, sample_weight)
        if weight is None:
            return X, y_enc, classes, None
        keep = weight > 0
        if not keep.all():
            X, y_enc, weight = X[keep], y_enc[keep], weight[keep]
        kept = np.unique(y_enc)
        if len(kept) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes with a "
                f"positive weight; only class {classes.tolist()[kept[0]]!r} has one."
            )
        if (weight == 1.0).all():  # weights 0 and 1: exactly the rows kept
            weight = None
        return X, y_enc, classes, weight

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        %(X_samples)s

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log probabilities, columns in the order of ``classes_``
            (``-inf`` where a probability is 0).
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Most probable class of each sample.

        %(X_samples)s

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)  # checks first that the model is fitted
        return self.classes_.take(proba.argmax(axis=1))


def _standardise(Y, ndim, weight=None):
    """``(Y standardised as float32, (mean, scale, ndim))``, weighted by
    ``weight`` when given (the scale is 1 where a target is constant)."""
    mean = np.average(Y, axis=0, weights=weight)
    scale = np.sqrt(np.average((Y - mean) ** 2, axis=0, weights=weight))
    scale = np.where(scale > 0, scale, 1.0)
    return ((Y - mean) / scale).astype(np.float32), (mean, scale, ndim)


class NetRegressorMixin:
    """Regression on top of :class:`BaseNetEstimator`.

    Put it after ``RegressorMixin`` and before the base::

        class MyNetRegressor(RegressorMixin, NetRegressorMixin, BaseNetEstimator):
            ...

    :meth:`_validate_training_data` checks the targets and standardises them
    (the mean and scale are stored as ``y_mean_`` and ``y_scale_`` by
    :meth:`_set_target_attributes`); :meth:`_to_targets` maps the nets'
    standardised outputs back to the scale and shape of ``y``. Regression
    nets train on float32 targets of shape ``(n_samples, n_outputs)``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_training_data(self, X, y):
        """Validate ``(X, y)``; return ``(X, Y, target_info)``.

        ``Y`` is the standardised float32 target matrix ``(n_samples,
        n_outputs)``; ``target_info`` is what :meth:`_set_target_attributes`
        stores once fit succeeds. Raises a ValueError for fewer than two
        samples or targets that are not numbers, or NaN or inf.
        """
        X, Y, ndim = self._validated_targets(X, y)
        return (X, *_standardise(Y, ndim))

    def _validated_targets(self, X, y):
        """Validated ``(X, Y as float64 (n_samples, n_outputs), y.ndim)``."""
        X, y = validate_data(
            self, X, y, dtype=np.float32, multi_output=True, y_numeric=True
        )
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise ValueError(
                f"{type(self).__name__} is a regressor: y must be numeric; got "
                f"dtype {y.dtype}."
            )
        if len(X) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples; got "
                f"n_samples = {len(X)}."
            )
        return X, y.astype(np.float64).reshape(len(y), -1), y.ndim

    def _validate_weighted_training_data(self, X, y, sample_weight=None):
        """:meth:`_validate_training_data` with ``sample_weight``.

        Returns ``(X, Y, target_info, weight)``, the regression counterpart
        of :meth:`NetClassifierMixin._validate_weighted_training_data`: rows
        of weight 0 are dropped from ``X`` and ``Y``; the targets are
        standardised with the weighted mean and standard deviation of the
        rows kept (those of the repeated rows, for integer weights);
        ``weight`` holds the weights of the rows kept, or is ``None`` when
        they are all exactly 1 (the unweighted code path). Raises a
        ValueError for weights of the wrong shape, negative, NaN or
        infinite, or fewer than two rows of positive weight.
        """
        if sample_weight is None:
            return (*self._validate_training_data(X, y), None)
        X, Y, ndim = self._validated_targets(X, y)
        weight = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        keep = weight > 0
        if keep.sum() < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples of positive "
                f"sample_weight; got {int(keep.sum())}."
            )
        if not keep.all():
            X, Y, weight = X[keep], Y[keep], weight[keep]
        if (weight == 1.0).all():  # weights 0 and 1: exactly the rows kept
            weight = None
        return (X, *_standardise(Y, ndim, weight), weight)

    def _set_target_attributes(self, target_info):
        mean, scale, ndim = target_info
        self.y_mean_ = mean
        self.y_scale_ = scale
        self.n_outputs_ = len(mean)
        self.y_ndim_ = int(ndim)

    def _to_targets(self, out):
        """Standardised outputs ``(n, n_outputs)`` -> predictions on the scale
        of ``y``, 1-D when ``y`` was."""
        pred = np.asarray(out, dtype=np.float64) * self.y_scale_ + self.y_mean_
        return pred.ravel() if self.y_ndim_ == 1 else pred
