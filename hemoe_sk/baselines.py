"""Honest controls for the hierarchy.

A hierarchy of fine-tuned experts is trained for longer, and holds more
networks, than the base network it starts from. Any gain it shows over that
base could come from the hierarchy (routing each sample to a specialist) or
simply from the extra training and the extra networks. The estimators here
give that extra training and those extra networks *without* any hierarchy, so
that the benchmark can tell the two apart:

* :class:`FineTunedEnsembleClassifier` trains the base network, then
  ``n_estimators`` copies of it, each fine-tuned on *all* of the training
  data with its own seed, and averages their probabilities. With
  ``n_estimators`` equal to a fitted tree's ``n_leaves_`` and
  ``finetune_epochs`` equal to its ``expert_max_epochs_``, it has as many
  networks as the tree has experts, each trained at least as long as an
  expert, on at least as much data.

(The other control, "the base network trained for as many epochs as the
tree's longest root-to-leaf path", needs no class of its own: it is the
classifier with ``max_depth=0`` and a larger ``max_epochs``.)
"""

from __future__ import annotations

import copy
from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval

from ._docstrings import fill_doc
from .base import (
    CLASS_WEIGHT_CONSTRAINT,
    EMBEDDER_CONSTRAINT,
    BaseNetEstimator,
    NetClassifierMixin,
    keep_state_on_error,
)
from .nn.build import EmbedderParamsMixin, build_embedder_net
from .nn.inference import predict_proba

__all__ = ["FineTunedEnsembleClassifier"]


@fill_doc
class FineTunedEnsembleClassifier(
    EmbedderParamsMixin, ClassifierMixin, NetClassifierMixin, BaseNetEstimator
):
    """Base network plus an ensemble of fine-tuned copies (equal-compute control).

    Fitting trains the base network (the same network, built from the same
    ``embedder`` specification and training knobs, that
    :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier` uses at its root),
    then makes ``n_estimators`` copies of the trained network and fine-tunes
    each one on *all* of the training data for ``finetune_epochs`` epochs,
    with its own seed (so its own batch order and dropout masks).
    ``predict_proba`` averages the members' probabilities. With the same
    ``random_state`` and training knobs, ``base_net_`` is the very network
    that ``HierarchicalEmbeddingMoEClassifier(max_depth=0)`` trains.

    It is a control, not a model to deploy: it gets the extra networks and the
    extra training a fitted hierarchy gets, but no routing. Where the
    hierarchy does not beat it, the hierarchy's gain over the base network is
    explained by more training and averaging, not by the hierarchy.

    Parameters
    ----------
    embedder : None, torch nn.Module subclass or skorch NeuralNet, default=None
        The base network. ``None`` is :class:`~hemoe_sk.nn.MLPEmbedder`. A
        module class (not an instance) returns logits and is configured with
        ``embedder__*`` keyword arguments; ``n_features`` and ``n_classes``
        are filled in at fit time. An unfitted skorch net is cloned and keeps
        its own training settings.
    n_estimators : int, default=4
        Number of fine-tuned copies averaged at prediction time.
    finetune_epochs : int or None, default=None
        Epochs each copy is fine-tuned on all the training data; ``None``
        means ``max_epochs``. ``0`` keeps the copies identical to the base
        network (the ensemble then predicts exactly as the base network).
    class_weight : None, "balanced" or dict, default=None
        Weight of each class in the loss of the base network and of every
        copy (see :doc:`/weights`): ``None``, all 1; ``"balanced"``, inversely
        proportional to the class's (weighted) frequency, as
        :func:`sklearn.utils.class_weight.compute_class_weight`; a dict
        ``{label: weight}``, 1 for labels not in it.
    max_epochs : int, default=100
        Most epochs of the base network's training (early stopping may end
        sooner).
    lr : float, default=2e-3
        Peak learning rate of the warm-up + cosine schedule, for the base
        network and the fine-tuning.
    batch_size : int or "auto", default="auto"
        Mini-batch size; ``"auto"`` grows with the rows
        (:func:`~hemoe_sk.nn.recipe.auto_batch_size`).
    optimizer : torch optimizer class, default=torch.optim.AdamW
        Optimizer class (not an instance). Fine-tuning continues the base
        network's optimizer state.
    %(recipe_training)s
    device : str, default="cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``. Without CUDA a
        CUDA device falls back to the CPU with a warning.
    random_state : int, RandomState instance or None, default=None
        Seeds the base network and, through seeds derived from it, every
        fine-tuned copy. The global torch and numpy RNGs are left unchanged.
    verbose : int, default=0
        ``0`` is silent; ``1`` prints one line per trained network.
    **embedder_params
        ``embedder__<name>=value`` arguments passed to the embedder module,
        e.g. ``embedder__hidden_dims=(256, 64)``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, as in ``y``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    base_net_ : skorch NeuralNet
        The trained base network (before any fine-tuning).
    estimators_ : list of skorch NeuralNet
        The fine-tuned copies whose probabilities are averaged.
    finetune_epochs_ : int
        Epochs each copy was fine-tuned.

    See Also
    --------
    hemoe_sk.HierarchicalEmbeddingMoEClassifier : the model this controls for.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.pipeline import make_pipeline
    >>> from hemoe_sk.baselines import FineTunedEnsembleClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(
    ...     StandardScaler(),
    ...     FineTunedEnsembleClassifier(n_estimators=2, max_epochs=20,
    ...                                 finetune_epochs=5, random_state=0),
    ... ).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints: dict = {
        **BaseNetEstimator._parameter_constraints,
        **EMBEDDER_CONSTRAINT,
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "finetune_epochs": [Interval(Integral, 0, None, closed="left"), None],
        **CLASS_WEIGHT_CONSTRAINT,
    }

    def __init__(
        self,
        embedder=None,
        *,
        n_estimators=4,
        finetune_epochs=None,
        class_weight=None,
        max_epochs=100,
        lr=2e-3,
        batch_size="auto",
        optimizer=torch.optim.AdamW,
        early_stopping=0.1,
        patience=20,
        lr_schedule="warmup_cosine",
        device="cpu",
        random_state=None,
        verbose=0,
        **embedder_params,
    ):
        self.embedder = embedder
        self.n_estimators = n_estimators
        self.finetune_epochs = finetune_epochs
        self.class_weight = class_weight
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
        # Kept privately (scikit-learn's checks allow only declared public
        # attributes in __init__); get_params/set_params expose them, and fit
        # rejects any that does not start with "embedder__".
        self._embedder_kwargs = dict(embedder_params)

    # ------------------------------------------------------------------
    def _log(self, message):
        if self.verbose:
            print(f"[FineTunedEnsembleClassifier] {message}", flush=True)

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the base network, then fine-tune ``n_estimators`` copies of it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, scaled (use a Pipeline with a scaler).
        y : array-like of shape (n_samples,)
            Class labels, of any type.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row in every network's loss (times
            its ``class_weight``); rows of weight 0 are left out. See
            :doc:`/weights`.

        Returns
        -------
        self : FineTunedEnsembleClassifier
            The fitted estimator.
        """
        embedder_params = self._module_params()
        X, y_enc, classes, weight = self._validate_weighted_training_data(
            X, y, sample_weight
        )
        X = np.ascontiguousarray(X)
        finetune_epochs = (
            self.max_epochs if self.finetune_epochs is None else self.finetune_epochs
        )
        seeds = self._draw_seeds(self.n_estimators + 1)
        net = build_embedder_net(
            self.embedder,
            n_features=X.shape[1],
            n_classes=len(classes),
            embedder_params=embedder_params,
            X=X,
            **self._net_params(),
        )
        self._train(
            net, X, y_enc, seed=seeds[0], stage="base network", weight=weight
        )
        self._log(f"base network trained ({net.max_epochs} epochs)")

        members = []
        for i, seed in enumerate(seeds[1:]):
            member = copy.deepcopy(net)
            if finetune_epochs > 0:
                self._train(
                    member,
                    X,
                    y_enc,
                    seed=seed,
                    stage=f"member {i}",
                    weight=weight,
                    partial=True,
                    max_epochs=finetune_epochs,
                )
            self._log(
                f"member {i + 1}/{self.n_estimators} fine-tuned "
                f"({finetune_epochs} epochs)"
            )
            members.append(member)

        self.classes_ = classes
        self.base_net_ = net
        self.estimators_ = members
        self.finetune_epochs_ = int(finetune_epochs)
        return self

    def predict_proba(self, X):
        """Average of the fine-tuned copies' class probabilities.

        %(X_samples)s

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``; rows sum to one.
        """
        X = np.ascontiguousarray(self._validate_X(X))
        proba = np.zeros((X.shape[0], len(self.classes_)))
        for member in self.estimators_:
            proba += predict_proba(member, X)
        proba /= len(self.estimators_)
        return proba
