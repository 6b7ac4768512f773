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
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
from skorch import NeuralNet

from .nn.nets import (
    EmbedderParamsMixin,
    build_embedder_net,
    encode_labels,
    keep_state_on_error,
    predict_proba,
    resolve_device,
    train_net,
)

__all__ = ["FineTunedEnsembleClassifier"]



def _seed_source(random_state):
    """A RandomState to draw seeds from that never advances numpy's global one.

    ``random_state=None`` draws fresh OS entropy instead of using the global
    RNG, so fitting leaves ``np.random``'s state untouched.
    """
    if random_state is None:
        entropy = np.random.SeedSequence().generate_state(1)[0]
        return np.random.RandomState(int(entropy))
    return check_random_state(random_state)


class FineTunedEnsembleClassifier(EmbedderParamsMixin, ClassifierMixin, BaseEstimator):
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
    max_epochs : int, default=20
        Epochs of the base network's training.
    lr : float, default=1e-3
        Learning rate, for the base network and the fine-tuning.
    batch_size : int, default=64
        Mini-batch size.
    optimizer : torch optimizer class, default=torch.optim.Adam
        Optimizer class (not an instance). Fine-tuning continues the base
        network's optimizer state.
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
        "embedder": [None, type, NeuralNet],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "finetune_epochs": [Interval(Integral, 0, None, closed="left"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [type, callable],
        "device": [str, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        embedder=None,
        *,
        n_estimators=4,
        finetune_epochs=None,
        max_epochs=20,
        lr=1e-3,
        batch_size=64,
        optimizer=torch.optim.Adam,
        device="cpu",
        random_state=None,
        verbose=0,
        **embedder_params,
    ):
        self.embedder = embedder
        self.n_estimators = n_estimators
        self.finetune_epochs = finetune_epochs
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        # Kept privately (scikit-learn's checks allow only declared public
        # attributes in __init__); get_params/set_params expose them, and fit
        # rejects any that does not start with "embedder__".
        self._embedder_kwargs = dict(embedder_params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    # ------------------------------------------------------------------
    def _log(self, message):
        if self.verbose:
            print(f"[FineTunedEnsembleClassifier] {message}", flush=True)

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the base network, then fine-tune ``n_estimators`` copies of it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, scaled (use a Pipeline with a scaler).
        y : array-like of shape (n_samples,)
            Class labels, of any type.

        Returns
        -------
        self : FineTunedEnsembleClassifier
            The fitted estimator.
        """
        embedder_params = self._module_params()
        X, y = validate_data(self, X, y, dtype=np.float32)
        classes, y_enc = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; "
                f"y has only one class: {classes[0]!r}."
            )
        X = np.ascontiguousarray(X)
        y_enc = y_enc.astype(np.int64)
        finetune_epochs = (
            self.max_epochs if self.finetune_epochs is None else self.finetune_epochs
        )
        seeds = _seed_source(self.random_state).randint(
            np.iinfo(np.int32).max, size=self.n_estimators + 1
        )
        net = build_embedder_net(
            self.embedder,
            n_features=X.shape[1],
            n_classes=len(classes),
            embedder_params=embedder_params,
            max_epochs=self.max_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            device=resolve_device(self.device),
        )
        train_net(net, X, y_enc, seed=int(seeds[0]), stage="ensemble base network")
        self._log(f"base network trained ({net.max_epochs} epochs)")

        members = []
        for i, seed in enumerate(seeds[1:]):
            member = copy.deepcopy(net)
            if finetune_epochs > 0:
                train_net(
                    member,
                    X,
                    y_enc,
                    seed=int(seed),
                    stage=f"ensemble member {i}",
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

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``; rows sum to one.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        X = np.ascontiguousarray(X)
        proba = np.zeros((X.shape[0], len(self.classes_)))
        for member in self.estimators_:
            proba += predict_proba(member, X)
        proba /= len(self.estimators_)
        return proba

    def predict(self, X):
        """Class with the highest averaged probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_.take(np.argmax(proba, axis=1))
