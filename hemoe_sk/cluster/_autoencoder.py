"""What the autoencoder-based clusterers share.

:class:`~hemoe_sk.DECClusterer` and
:class:`~hemoe_sk.MixtureOfAutoencodersClusterer` both pretrain a
:class:`~hemoe_sk.nn.AutoEncoder` wrapped by skorch, accept one pretrained by
the other (the hook that lets a node pretrain once and refine for every K),
and encode in batches. :class:`AutoencoderClustererMixin` holds that once.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNet, NeuralNetRegressor
from skorch.callbacks import Callback
from torch import nn

from .._docstrings import fill_doc
from ..base import check_layer_sizes, keep_state_on_error
from ..nn.build import house_net
from ..nn.inference import EVAL_BATCH_SIZE, batched
from ..nn.modules import AutoEncoder
from ..nn.training import (
    MAX_SEED,
    resolve_device,
    retry_on_divergence,
    seed_source,
    torch_seed,
    train_net,
)
from .routing import RouterMixin


class _EpochProgress(Callback):
    """skorch callback showing one tqdm step per epoch (``verbose >= 1``).

    The bar is dropped when the net is pickled, like skorch's own
    ``ProgressBar``.
    """

    def __init__(self, desc="pretraining"):
        self.desc = desc

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        from tqdm.auto import tqdm

        self.bar_ = tqdm(total=kwargs.get("epochs") or net.max_epochs, desc=self.desc)

    def on_epoch_end(self, net, **kwargs):
        bar = getattr(self, "bar_", None)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{net.history[-1, 'train_loss']:.4g}")

    def on_train_end(self, net, X=None, y=None, **kwargs):
        bar = getattr(self, "bar_", None)
        if bar is not None:
            bar.close()
        self.bar_ = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("bar_", None)
        return state


class _ArrayBatches:
    """Mini-batches of an in-memory skorch ``Dataset``, sliced, not collated.

    A drop-in for ``torch.utils.data.DataLoader`` as skorch's
    ``iterator_train``: torch's loader fetches and stacks one row at a time,
    which costs more than the small autoencoder's forward and backward pass.
    Batches are slices of the tensors (no copy of ``X``); the order comes
    from torch's global generator, which :func:`~hemoe_sk.nn.training.torch_seed`
    seeds. Data it cannot slice (a user ``Dataset``) goes to a ``DataLoader``.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, **kwargs):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.kwargs = kwargs

    def _arrays(self):
        X = getattr(self.dataset, "X", None)
        y = getattr(self.dataset, "y", None)
        if isinstance(X, np.ndarray) and isinstance(y, np.ndarray):
            return torch.from_numpy(X), torch.from_numpy(y)
        return None

    def __len__(self):
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        arrays = self._arrays()
        if arrays is None:
            yield from torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                shuffle=self.shuffle,
                **self.kwargs,
            )
            return
        X, y = arrays
        n = len(X)
        order = torch.randperm(n) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            if order is None:
                yield X[start:stop], y[start:stop]
            else:
                yield X[order[start:stop]], y[order[start:stop]]


@fill_doc
class AutoencoderClustererMixin(
    RouterMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
):
    """Autoencoder plumbing of a clusterer with ``n_clusters``,
    ``hidden_dims``, ``embedding_dim``, ``pretrain_epochs``, ``tol``,
    ``batch_size``, ``lr``, ``n_init``, ``device``, ``random_state`` and
    ``verbose`` parameters (constrained by :attr:`_shared_constraints`).

    The class sets ``_progress_desc`` (shown by the tqdm bar) and
    ``_clustering_attributes`` (what :meth:`pretrain` forgets; the first is
    what marks it fitted), implements ``_route_proba(X)`` (soft assignments
    of validated ``X``) and ``_n_features_out``, and may override
    :meth:`_embedding_dim`. The mixin gives ``predict_proba``, ``predict``
    (:class:`~hemoe_sk.cluster.routing.RouterMixin`), ``transform`` (the soft
    assignments; defined here, a subclass of ``TransformerMixin``, so that
    ``set_output`` wraps it), ``fit_transform`` and ``fit_predict``.
    """

    _progress_desc = "pretraining"
    _clustering_attributes = ()

    #: Constraints of the parameters both clusterers have.
    _shared_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "hidden_dims": [tuple, list],
        "pretrain_epochs": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, 1, closed="both")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "device": [str, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=True)
    def pretrain(self, X, y=None):
        """Fit only the autoencoder on the reconstruction loss.

        Sets :attr:`autoencoder_` (and forgets any earlier clustering), so
        that ``fit(X, autoencoder=self.autoencoder_)`` on clones of this
        estimator can skip pretraining.

        Parameters
        ----------
        %(fit_X_y_ignored)s

        Returns
        -------
        self : object
            This estimator, with :attr:`autoencoder_` fitted.
        """
        X = self._validate_X(X, reset=True)
        for attr in self._clustering_attributes:
            self.__dict__.pop(attr, None)
        seeds = self._seeds()
        self.autoencoder_ = self._pretrain(X, seeds[0], resolve_device(self.device))
        return self

    def _validate_X(self, X, *, reset):
        X = validate_data(self, X, reset=reset, dtype=np.float32)
        if not (X.flags.c_contiguous and X.flags.writeable):
            # torch wants writeable memory; read-only memmaps are copied.
            X = np.array(X, dtype=np.float32, order="C", copy=True)
        return X

    def _seeds(self):
        """Integer seeds for pretraining, initialisation and training.

        Always drawn in this order, so ``pretrain`` followed by
        ``fit(autoencoder=...)`` on a clone uses the same seeds as ``fit``.
        """
        rng = seed_source(self.random_state)
        return [int(s) for s in rng.randint(0, MAX_SEED, size=3)]

    def _start_fit(self, X, autoencoder):
        """What ``fit`` does first: validate ``X``, resolve the device, draw
        the seeds, pretrain (or adopt ``autoencoder``).

        Returns ``(X, device, seeds, net, pretrain_loss)``; ``pretrain_loss``
        is empty for an adopted autoencoder.
        """
        X = self._validate_X(X, reset=True)
        if X.shape[0] < self.n_clusters:
            raise ValueError(
                f"n_samples={X.shape[0]} should be >= n_clusters="
                f"{self.n_clusters}: {type(self).__name__} cannot make more "
                "clusters than there are samples."
            )
        device = resolve_device(self.device)
        seeds = self._seeds()
        if autoencoder is None:
            net = self._pretrain(X, seeds[0], device)
            pretrain_loss = [float(v) for v in net.history[:, "train_loss"]]
        else:
            net = self._adopt_autoencoder(autoencoder, X.shape[1], device)
            pretrain_loss = []
        return X, device, seeds, net, pretrain_loss

    def _kmeans(self, Z, seed):
        """k-means with ``n_clusters`` and ``n_init`` on ``Z`` (fitted)."""
        with warnings.catch_warnings():
            # Fewer distinct points than clusters: fit reports it, once.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return KMeans(
                n_clusters=self.n_clusters, n_init=self.n_init, random_state=seed
            ).fit(Z)

    def _train_with_retry(self, step, *, seed, device, history, keys, stage,
                          restore=None):
        """``step(seed, lr)`` under :func:`~hemoe_sk.nn.training.torch_seed`,
        retried once at ``lr / 10`` if it diverges
        (:func:`~hemoe_sk.nn.training.retry_on_divergence`).

        Before the retry, ``restore()`` (when given) puts back what the failed
        attempt changed, and the ``history`` lists under ``keys`` are emptied;
        the retry runs with ``seed + 1``. ``stage`` names the training in
        messages, after the class name. Returns what ``step`` returned.
        """

        def attempt(i, lr):
            with torch_seed(seed + i, device):
                return step(seed + i, lr)

        def on_retry(lr):
            if restore is not None:
                restore()
            for key in keys:
                history[key] = []

        return retry_on_divergence(
            attempt,
            lr=float(self.lr),
            stage=f"{type(self).__name__} {stage}",
            on_retry=on_retry,
            stacklevel=5,  # here, fit, fit's two decorators, then the caller
        )

    def _warn_empty_clusters(self, why):
        """ConvergenceWarning when some of the ``n_clusters`` got no sample."""
        n_empty = self.n_clusters - np.unique(self.labels_).size
        if n_empty:
            warnings.warn(
                f"{type(self).__name__}: {n_empty} of the {self.n_clusters} "
                f"clusters {why}. Their soft assignments stay defined; consider "
                "a smaller n_clusters.",
                ConvergenceWarning,
                stacklevel=5,  # here, fit, fit's two decorators, then the caller
            )

    def _embedding_dim(self, n_features):
        return int(self.embedding_dim)

    def _build_autoencoder(self, n_features, device):
        callbacks = []
        if self.verbose:
            callbacks.append(("progress", _EpochProgress(self._progress_desc)))
        return house_net(
            NeuralNetRegressor,
            AutoEncoder,
            criterion=nn.MSELoss,
            optimizer=torch.optim.Adam,
            lr=self.lr,
            max_epochs=self.pretrain_epochs,
            batch_size=self.batch_size,
            device=device,
            callbacks=callbacks,
            module__n_features=int(n_features),
            module__hidden_dims=check_layer_sizes(self.hidden_dims, "hidden_dims"),
            module__embedding_dim=self._embedding_dim(n_features),
            iterator_train=_ArrayBatches,
        )

    def _pretrain(self, X, seed, device):
        net = self._build_autoencoder(X.shape[1], device)
        return train_net(net, X, X, seed=seed, stage=f"{type(self).__name__} pretraining")

    @staticmethod
    def _check_autoencoder(autoencoder, n_features):
        """A given pretrained autoencoder net, checked against ``X``."""
        if not isinstance(autoencoder, NeuralNet):
            raise TypeError(
                "autoencoder must be a fitted skorch net, such as a "
                "DECClusterer's or MixtureOfAutoencodersClusterer's "
                f"`autoencoder_`; got {type(autoencoder).__name__}."
            )
        module = getattr(autoencoder, "module_", None)
        if not getattr(autoencoder, "initialized_", False) or module is None:
            raise ValueError(
                "autoencoder is not fitted: call pretrain(X) or fit(X) first "
                "and pass its `autoencoder_`."
            )
        if not (callable(getattr(module, "encode", None))
                and callable(getattr(module, "decode", None))):
            raise TypeError(
                "autoencoder.module_ must have `encode` and `decode` methods, "
                f"like hemoe_sk.nn.AutoEncoder; got {type(module).__name__}."
            )
        first = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
        if first is not None and first.in_features != n_features:
            raise ValueError(
                f"The given autoencoder expects {first.in_features} input "
                f"features, but X has {n_features} features."
            )
        return autoencoder

    def _adopt_autoencoder(self, autoencoder, n_features, device):
        """A deep copy of a checked pretrained autoencoder, on ``device``."""
        net = copy.deepcopy(self._check_autoencoder(autoencoder, n_features))
        net.module_.to(device)
        net.device = device
        return net

    @staticmethod
    def _encode(module, X):
        """Codes of validated ``X`` under ``module``, in batches (float32)."""
        Z = batched(module, module.encode, X, EVAL_BATCH_SIZE)
        return Z.reshape(len(X), -1)

    # ------------------------------------------------------------ inference

    def __sklearn_is_fitted__(self):
        return hasattr(self, self._clustering_attributes[0])

    def _validate_new(self, X):
        check_is_fitted(self)
        return self._validate_X(X, reset=False)

    def transform(self, X):
        """Soft cluster assignments, as :meth:`predict_proba` gives them.

        %(new_X_parameters)s

        Returns
        -------
        Q : ndarray of shape (n_samples, n_clusters)
            Soft assignments (see the class description); each row sums to
            one. ``set_output`` can make it a DataFrame.
        """
        return self._route_proba(self._validate_new(X))

    def fit_predict(self, X, y=None, *, autoencoder=None):
        """Fit, then return the cluster of each training sample.

        Parameters
        ----------
        %(fit_X_y_ignored)s

        autoencoder : skorch.NeuralNet, default=None
            A fitted autoencoder net to start from instead of pretraining, as
            in :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,), dtype=int64
            Cluster index of each training sample (:attr:`labels_`).
        """
        return self.fit(X, autoencoder=autoencoder).labels_
