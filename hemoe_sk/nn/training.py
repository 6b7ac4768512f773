"""Training nets reproducibly: seeding, the divergence guard, the NaN retry.

Everything that touches torch's global RNG lives here:

* :func:`seed_source` gives the ``RandomState`` an estimator draws its integer
  seeds from, and :func:`torch_seed` runs a block under a private torch RNG
  stream, putting the caller's global state back afterwards;
* :func:`resolve_device` turns ``"auto"``/``"cuda"`` into a usable device;
* :class:`FiniteLossGuard` stops a skorch net at the first NaN or inf loss;
* :func:`retry_on_divergence` runs a training step and, when its loss became
  NaN or inf, retries it once at a tenth of the learning rate, else fails with
  an error naming the stage. :func:`train_net` applies it to skorch nets; the
  clusterers' own torch loops use it directly.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch.callbacks import Callback

__all__ = [
    "MAX_SEED",
    "DivergenceError",
    "FiniteLossGuard",
    "RowSubset",
    "resolve_device",
    "retry_on_divergence",
    "seed_source",
    "torch_seed",
    "train_net",
]

#: Exclusive upper bound of the integer seeds drawn from :func:`seed_source`.
MAX_SEED = np.iinfo(np.int32).max


class DivergenceError(RuntimeError):
    """Raised when training produced a non-finite loss twice in a row."""


#: torch's RNG is global to the process: blocks seeded by :func:`torch_seed`
#: in several threads (joblib's threading backend) take turns, so each
#: draws the stream of its own seed.
_SEED_LOCK = threading.RLock()


@contextlib.contextmanager
def torch_seed(seed, device="cpu"):
    """Run a block with torch seeded by ``seed``, restoring the global RNG.

    Parameters
    ----------
    seed : int
        Seed for the block.
    device : str or torch.device, default="cpu"
        When a CUDA device, its RNG is forked and seeded too.

    Seeded blocks of other threads wait for this one to end (torch's RNG
    is shared by the threads of a process).

    Examples
    --------
    >>> import torch
    >>> with torch_seed(0):
    ...     a = torch.rand(2)
    >>> with torch_seed(0):
    ...     b = torch.rand(2)
    >>> bool(torch.equal(a, b))
    True
    """
    devices = []
    if str(device).startswith("cuda") and torch.cuda.is_available():
        devices = [torch.device(device).index or 0]
    with _SEED_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def seed_source(random_state):
    """A ``RandomState`` to draw an estimator's integer seeds from.

    Like :func:`sklearn.utils.check_random_state`, except that ``None`` draws
    fresh OS entropy instead of using numpy's global RNG, so that ``fit``
    leaves ``np.random``'s state unchanged. Draw seeds with
    ``int(rng.randint(MAX_SEED))``.

    Examples
    --------
    >>> a = seed_source(0).randint(MAX_SEED, size=2)
    >>> b = seed_source(0).randint(MAX_SEED, size=2)
    >>> bool((a == b).all())
    True
    """
    if random_state is None:
        return np.random.RandomState(int(np.random.SeedSequence().generate_state(1)[0]))
    return check_random_state(random_state)


def resolve_device(device):
    """Return the torch device string to use for ``device``.

    ``"auto"`` (or ``None``) picks CUDA when available. Asking for CUDA on a
    machine without it warns and falls back to the CPU, so a configuration
    written for a GPU still runs (slowly) elsewhere.
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


class FiniteLossGuard(Callback):
    """skorch callback that stops training as soon as a loss is NaN or inf."""

    def on_batch_end(self, net, batch=None, training=None, **step):
        loss = step.get("loss")
        if loss is not None and not torch.isfinite(loss).all():
            raise DivergenceError("non-finite training loss")


class RowSubset(torch.utils.data.Dataset):
    """A view of some rows of ``(X, y)`` that never copies ``X``.

    Experts train on clusters of a node's data; handing skorch this dataset
    instead of ``X[rows]`` keeps a single copy of the training matrix however
    many experts and candidate K there are.

    With ``weight`` (one non-negative number per row of ``X``, like ``y``),
    an item is ``(x, (y, w))``: skorch hands the pair ``(y, w)`` of a batch
    to the net's ``get_loss`` as its target, and
    :class:`~hemoe_sk.nn.build.HemoeNeuralNetClassifier` weights each row's
    loss by ``w``. Without it an item is ``(x, y)``, exactly as before.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> y = np.array([0, 1, 0])
    >>> x, (label, w) = RowSubset(X, y, [2, 0], weight=np.array([1., 2., 3.]))[0]
    >>> x.tolist(), int(label), float(w)
    ([4.0, 5.0], 0, 3.0)
    """

    def __init__(self, X, y, rows, weight=None):
        self.X = X
        self.y = y
        self.rows = np.asarray(rows, dtype=np.intp)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float32)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        # torch.tensor copies the row: X may be a read-only memmap.
        if self.weight is None:
            return torch.tensor(self.X[r]), torch.tensor(self.y[r])
        return torch.tensor(self.X[r]), (
            torch.tensor(self.y[r]),
            torch.tensor(self.weight[r]),
        )


def retry_on_divergence(step, *, lr, stage, on_retry=None, stacklevel=2):
    """Run ``step(attempt, lr)``; after a :class:`DivergenceError`, once more
    at ``lr / 10``.

    Parameters
    ----------
    step : callable
        ``step(attempt, lr)`` trains and returns its result; it raises
        :class:`DivergenceError` when its loss became NaN or inf. ``attempt``
        is 0, then 1 for the retry (add it to a seed to draw new batches).
    lr : float
        Learning rate of the first attempt.
    stage : str
        Human-readable name of what is being trained, used in messages.
    on_retry : callable, optional
        ``on_retry(new_lr)`` is called before the retry, to put back the
        state the failed attempt changed.
    stacklevel : int, default=2
        Stack level of the warning, counted from the caller of this function.

    Returns
    -------
    result
        What ``step`` returned.

    Raises
    ------
    DivergenceError
        If the retry diverged too; the message names ``stage``.

    Examples
    --------
    >>> import warnings
    >>> def step(attempt, lr):
    ...     if lr > 0.01:
    ...         raise DivergenceError("nan")
    ...     return lr
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     used = retry_on_divergence(step, lr=0.05, stage="demo")
    >>> round(used, 4), str(caught[0].message)
    (0.005, 'demo: the training loss became NaN or inf; retrying once with lr=0.005.')
    """
    for attempt in range(2):
        try:
            return step(attempt, lr)
        except DivergenceError:
            if attempt == 1:
                break
            lr = lr / 10
            warnings.warn(
                f"{stage}: the training loss became NaN or inf; retrying once "
                f"with lr={lr:g}.",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
            if on_retry is not None:
                on_retry(lr)
    raise DivergenceError(
        f"{stage}: training diverged (NaN or inf loss) even with a 10x lower "
        "learning rate. Scale the features, or lower `lr`."
    ) from None


def set_lr(net, lr):
    """Set ``net``'s learning rate, in its optimizer too, without re-initialising."""
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
    if getattr(X, "weight", None) is not None and not getattr(
        net, "supports_row_weights", False
    ):
        raise TypeError(
            f"{stage}: sample_weight and class_weight need a net whose loss takes "
            f"per-row weights; {type(net).__name__} does not. Pass the embedder as "
            "a torch module class, or as a hemoe_sk.nn.build.HemoeNeuralNetClassifier "
            "(HemoeNeuralNetRegressor for a regressor)."
        )
    saved = copy.deepcopy(net.module_.state_dict()) if partial else None
    device = getattr(net, "device", "cpu")

    def step(attempt, lr):
        with torch_seed(seed + attempt, device):
            if partial:
                net.partial_fit(X, y, epochs=max_epochs)
            else:
                net.fit(X, y, epochs=max_epochs)
        return net

    def on_retry(lr):
        if partial:
            net.module_.load_state_dict(saved)
            net.initialize_optimizer()
        # A net that diverged at this rate keeps the lower one, also for any
        # later fine-tuning of its copies.
        set_lr(net, lr)

    return retry_on_divergence(
        step, lr=net.lr, stage=stage, on_retry=on_retry, stacklevel=2
    )
