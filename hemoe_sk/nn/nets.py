"""The skorch side of hemoe_sk: building, seeding, training and reading nets.

Everything that touches torch global state or devices lives here, so the
estimators above can stay plain scikit-learn code:

* :func:`torch_seed` runs a block under a private torch RNG stream and puts
  the caller's global RNG state back afterwards;
* :func:`resolve_device` turns ``"auto"``/``"cuda"`` into a usable device;
* :func:`make_classifier_net` builds a skorch ``NeuralNetClassifier`` with the
  settings hemoe_sk relies on (logits + ``CrossEntropyLoss``, no internal
  validation split, shuffled batches, silent);
* :func:`train_net` fits or fine-tunes a net, catching a non-finite loss at
  once, retrying once with a lower learning rate and otherwise failing with an
  error that names the stage;
* :func:`embed` and :func:`predict_proba` evaluate in batches under
  ``torch.no_grad()`` in eval mode, keeping data as float32 on the host.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings

import inspect

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.utils import to_tensor
from torch import nn

from .modules import MLPEmbedder

__all__ = [
    "DivergenceError",
    "EmbedderParamsMixin",
    "HemoeNeuralNetClassifier",
    "RowSubset",
    "build_embedder_net",
    "check_finite_outputs",
    "embed",
    "encode_labels",
    "keep_state_on_error",
    "make_classifier_net",
    "predict_proba",
    "resolve_device",
    "seed_source",
    "torch_seed",
    "train_net",
]

#: Largest batch used for inference (embedding, prediction).
EVAL_BATCH_SIZE = 4096


class DivergenceError(RuntimeError):
    """Raised when training produced a non-finite loss twice in a row."""


@contextlib.contextmanager
def torch_seed(seed, device="cpu"):
    """Run a block with torch seeded by ``seed``, restoring the global RNG.

    Parameters
    ----------
    seed : int
        Seed for the block.
    device : str or torch.device, default="cpu"
        When a CUDA device, its RNG is forked and seeded too.
    """
    devices = []
    if str(device).startswith("cuda") and torch.cuda.is_available():
        devices = [torch.device(device).index or 0]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def seed_source(random_state):
    """A ``RandomState`` to draw an estimator's seeds from.

    Like :func:`sklearn.utils.check_random_state`, except that ``None`` draws
    fresh OS entropy instead of using numpy's global RNG, so that ``fit``
    leaves ``np.random``'s state unchanged.
    """
    if random_state is None:
        return np.random.RandomState(int(np.random.SeedSequence().generate_state(1)[0]))
    return check_random_state(random_state)


def encode_labels(y):
    """Check classification targets; return ``(classes, codes as int64)``.

    scikit-learn's ``check_classification_targets`` and ``np.unique`` fail
    with an opaque ``'<' not supported`` when labels mix strings and numbers;
    this says so instead.
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


def resolve_device(device):
    """Return the torch device string to use for ``device``.

    ``"auto"`` picks CUDA when available. Asking for CUDA on a machine without
    it warns and falls back to the CPU, so a configuration written for a GPU
    still runs (slowly) elsewhere.
    """
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"device={device!r} was requested but CUDA is not available; "
            "using the CPU instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "cpu"
    return device


class RowSubset(torch.utils.data.Dataset):
    """A view of some rows of ``(X, y)`` that never copies ``X``.

    Experts train on clusters of a node's data; handing skorch this dataset
    instead of ``X[rows]`` keeps a single copy of the training matrix however
    many experts and candidate K there are.
    """

    def __init__(self, X, y, rows):
        self.X = X
        self.y = y
        self.rows = np.asarray(rows, dtype=np.intp)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        # torch.tensor copies the row: X may be a read-only memmap.
        return torch.tensor(self.X[r]), torch.tensor(self.y[r])


class FiniteLossGuard(Callback):
    """skorch callback that stops training as soon as a loss is NaN or inf."""

    def on_batch_end(self, net, batch=None, training=None, **step):
        loss = step.get("loss")
        if loss is not None and not torch.isfinite(loss).all():
            raise DivergenceError("non-finite training loss")


class HemoeNeuralNetClassifier(NeuralNetClassifier):
    """skorch classifier that adds a module's own auxiliary loss.

    A module may define ``auxiliary_loss(y_true)`` returning a scalar tensor
    computed from state it kept during its last ``forward`` (DeepMoE's gate
    sparsity and shallow-embedding losses do this). It is added to the
    criterion's loss during training only.
    """

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        aux = getattr(self.module_, "auxiliary_loss", None)
        if training and callable(aux):
            loss = loss + aux(to_tensor(y_true, device=self.device))
        return loss


def make_classifier_net(
    module,
    *,
    n_features,
    n_classes,
    module_params=None,
    max_epochs=10,
    lr=1e-3,
    batch_size=64,
    optimizer=torch.optim.Adam,
    device="cpu",
):
    """Build an (uninitialised) skorch classifier around ``module``.

    ``module`` is a class returning logits; ``n_features`` and ``n_classes``
    are passed to it, together with ``module_params``.
    """
    params = {f"module__{k}": v for k, v in (module_params or {}).items()}
    return HemoeNeuralNetClassifier(
        module,
        module__n_features=int(n_features),
        module__n_classes=int(n_classes),
        criterion=nn.CrossEntropyLoss,
        optimizer=optimizer,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[("finite_loss", FiniteLossGuard())],
        device=device,
        verbose=0,
        **params,
    )


EMBEDDER_PREFIX = "embedder__"


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
        bad = [k for k in kwargs if not k.startswith(EMBEDDER_PREFIX) or k == EMBEDDER_PREFIX]
        if bad:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {bad}: only "
                f"'{EMBEDDER_PREFIX}<name>' keywords are forwarded to the embedder "
                "module."
            )
        return {k[len(EMBEDDER_PREFIX):]: v for k, v in kwargs.items()}


def _accepts(cls, name):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    return name in params or any(
        p.kind is p.VAR_KEYWORD for p in params.values()
    )


def build_embedder_net(
    embedder,
    *,
    n_features,
    n_classes,
    embedder_params=None,
    max_epochs=10,
    lr=1e-3,
    batch_size=64,
    optimizer=torch.optim.Adam,
    device="cpu",
):
    """Resolve an ``embedder`` parameter into an unfitted skorch classifier.

    Parameters
    ----------
    embedder : None, nn.Module subclass or skorch NeuralNet
        ``None`` builds :class:`~hemoe_sk.nn.MLPEmbedder`. A module class is
        wrapped with :func:`make_classifier_net` and configured with
        ``embedder_params``. A skorch net is cloned (never mutated) and keeps
        its own training settings; ``n_features``/``n_classes`` are filled in
        when its module accepts them and the net does not set them.
    """
    if embedder is None:
        embedder = MLPEmbedder
    if isinstance(embedder, type) and issubclass(embedder, nn.Module):
        return make_classifier_net(
            embedder,
            n_features=n_features,
            n_classes=n_classes,
            module_params=embedder_params,
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            device=device,
        )
    if isinstance(embedder, NeuralNet):
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


def _set_lr(net, lr):
    """Lower ``net``'s learning rate in its optimizer without re-initialising."""
    net.lr = lr
    if hasattr(net, "optimizer_"):
        for group in net.optimizer_.param_groups:
            group["lr"] = lr


def train_net(net, X, y=None, *, seed, stage, partial=False, max_epochs=None):
    """Fit (or, with ``partial=True``, continue fitting) ``net`` reproducibly.

    Parameters
    ----------
    net : skorch.NeuralNet
        The net to train, in place.
    X, y : array-like or Dataset
        Training data, passed to skorch.
    seed : int
        Seeds initialisation and batch order; the global RNG is restored.
    stage : str
        Human-readable name of what is being trained, used in messages.
    partial : bool, default=False
        Continue training the current weights (fine-tuning) instead of
        re-initialising.
    max_epochs : int, optional
        Epochs for this call; defaults to ``net.max_epochs``.

    Returns
    -------
    net
        The trained net.

    Raises
    ------
    DivergenceError
        If the loss became NaN or inf again after one retry at a tenth of the
        learning rate.
    """
    saved = None
    if partial:
        saved = copy.deepcopy(net.module_.state_dict())
    device = getattr(net, "device", "cpu")
    lr = net.lr
    for attempt in range(2):
        try:
            with torch_seed(seed + attempt, device):
                if partial:
                    net.partial_fit(X, y, epochs=max_epochs)
                else:
                    net.fit(X, y, epochs=max_epochs)
            return net
        except DivergenceError:
            if attempt == 1:
                break
            warnings.warn(
                f"{stage}: the training loss became NaN or inf; retrying once "
                f"with lr={lr / 10:g}.",
                RuntimeWarning,
                stacklevel=2,
            )
            if partial:
                net.module_.load_state_dict(saved)
                net.initialize_optimizer()
            # A net that diverged at this rate keeps the lower one, also for
            # any later fine-tuning of its copies.
            _set_lr(net, lr / 10)
    raise DivergenceError(
        f"{stage}: training diverged (NaN or inf loss) even with a 10x lower "
        "learning rate. Scale the features, or lower `lr`."
    )


def _module_of(net_or_module):
    return getattr(net_or_module, "module_", net_or_module)


def _embedding_fn(module):
    """The function returning ``module``'s embedding for a batch.

    A module's own ``embed`` method wins; otherwise the input of its last
    ``nn.Linear`` (the output layer cut off) is captured with a hook.
    """
    if callable(getattr(module, "embed", None)):
        return module.embed
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(
            f"Cannot take embeddings from {type(module).__name__}: it has no "
            "`embed` method and no nn.Linear output layer to cut off."
        )
    last = linears[-1]

    def fn(x):
        captured = []
        handle = last.register_forward_hook(
            lambda mod, inputs, out: captured.append(inputs[0])
        )
        try:
            module(x)
        finally:
            handle.remove()
        return captured[-1]

    return fn


def _device_of(module):
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batched(module, fn, X, batch_size, rows=None):
    device = _device_of(module)
    was_training = module.training
    module.eval()
    n = len(X) if rows is None else len(rows)
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = start + batch_size
                xb = X[start:stop] if rows is None else X[rows[start:stop]]
                xb = torch.as_tensor(np.asarray(xb, dtype=np.float32)).to(device)
                outs.append(fn(xb).detach().float().cpu().numpy())
    finally:
        module.train(was_training)
    if not outs:
        return np.empty((0, 0), dtype=np.float32)
    return np.concatenate(outs)


def embed(net_or_module, X, *, rows=None, batch_size=EVAL_BATCH_SIZE):
    """Embeddings of ``X`` (or of ``X[rows]``), output layer cut off.

    Batches are taken from ``X`` directly, so selecting ``rows`` never copies
    the whole selection. Returns float32 numpy.
    """
    module = _module_of(net_or_module)
    out = _batched(module, _embedding_fn(module), X, batch_size, rows)
    return check_finite_outputs(out.reshape(len(out), -1), "embeddings")


def check_finite_outputs(out, what="outputs"):
    """Return ``out``, or raise a clear ValueError if a row has NaN or inf.

    Finite inputs far outside the training range (unscaled data, 1e30) can
    overflow a network; the result must be an error, never silent NaN
    probabilities or routes.
    """
    out = np.asarray(out)
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"The network's {what} are NaN or inf for {int(bad.sum())} of "
            f"{len(out)} samples: their features are probably far outside the "
            "range seen in training (scale new data as the training data was)."
        )
    return out


def predict_proba(net_or_module, X, *, rows=None, batch_size=EVAL_BATCH_SIZE):
    """Softmax of the module's logits on ``X`` (or ``X[rows]``), float64."""
    module = _module_of(net_or_module)
    logits = _batched(module, module, X, batch_size, rows).astype(np.float64)
    check_finite_outputs(logits, "outputs")
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(axis=1, keepdims=True)
    return proba
