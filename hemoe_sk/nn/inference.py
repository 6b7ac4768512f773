"""Reading trained nets: batched evaluation, embeddings, probabilities.

Evaluation runs in batches under ``torch.no_grad()`` in eval mode, with the
data kept as float32 numpy on the host and each batch moved to the module's
device. Outputs are checked to be finite: inputs far outside the training
range must give a clear error, never silent NaN probabilities or routes.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

__all__ = [
    "EVAL_BATCH_SIZE",
    "batched",
    "check_finite_outputs",
    "device_of",
    "embed",
    "layer_input",
    "module_of",
    "predict_output",
    "predict_proba",
]

#: Largest batch used for inference (embedding, prediction).
EVAL_BATCH_SIZE = 4096


def module_of(net_or_module):
    """The torch module of a skorch net (its ``module_``), or the module itself."""
    return getattr(net_or_module, "module_", net_or_module)


def device_of(module):
    """Device of ``module``'s first parameter (the CPU for a module without)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def batched(module, fn, X, batch_size=EVAL_BATCH_SIZE, rows=None, dtype=np.float32):
    """``fn`` applied to ``X`` (or ``X[rows]``) in batches, as float32 numpy
    (``dtype``: float64 for a module converted to double).

    ``module`` is put in eval mode (and back afterwards) and gives the device
    the batches are moved to; ``fn`` maps a batch tensor to an output tensor
    (``module`` itself, or one of its methods). Batches are taken from ``X``
    directly, so selecting ``rows`` never copies the whole selection.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> layer = nn.Linear(3, 2)
    >>> batched(layer, layer, np.ones((5, 3)), batch_size=2).shape
    (5, 2)
    """
    device = device_of(module)
    was_training = module.training
    module.eval()
    n = len(X) if rows is None else len(rows)
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                stop = start + batch_size
                xb = X[start:stop] if rows is None else X[rows[start:stop]]
                xb = torch.as_tensor(np.asarray(xb, dtype=dtype)).to(device)
                out_dtype = torch.float64 if dtype == np.float64 else torch.float32
                outs.append(fn(xb).detach().to(out_dtype).cpu().numpy())
    finally:
        module.train(was_training)
    if not outs:
        return np.empty((0, 0), dtype=dtype)
    return np.concatenate(outs)


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
    return lambda x: layer_input(module, last, x)


def layer_input(module, layer, x):
    """Run ``module(x)`` and return what its submodule ``layer`` received.

    The input is captured with a forward hook, removed afterwards; with a
    layer run more than once, its last input.
    """
    captured = []
    handle = layer.register_forward_hook(
        lambda mod, inputs, out: captured.append(inputs[0])
    )
    try:
        module(x)
    finally:
        handle.remove()
    return captured[-1]


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


def embed(net_or_module, X, *, rows=None, batch_size=EVAL_BATCH_SIZE):
    """Embeddings of ``X`` (or of ``X[rows]``), output layer cut off.

    The embedding is the module's ``embed(x)`` when it has one, else the
    input of its last ``nn.Linear``. Returns float32 numpy.
    """
    module = module_of(net_or_module)
    out = batched(module, _embedding_fn(module), X, batch_size, rows)
    return check_finite_outputs(out.reshape(len(out), -1), "embeddings")


def predict_proba(net_or_module, X, *, rows=None, batch_size=EVAL_BATCH_SIZE):
    """Softmax of the module's logits on ``X`` (or ``X[rows]``), float64."""
    module = module_of(net_or_module)
    logits = batched(module, module, X, batch_size, rows).astype(np.float64)
    check_finite_outputs(logits, "outputs")
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(axis=1, keepdims=True)
    return proba


def predict_output(net, X, *, rows=None, batch_size=EVAL_BATCH_SIZE):
    """What a fitted net predicts, as float64: class probabilities for a
    skorch classifier (:func:`predict_proba`), the module's raw outputs
    ``(n_samples, n_outputs)`` for any other net (a regressor)."""
    from skorch import NeuralNetClassifier

    if isinstance(net, NeuralNetClassifier):
        return predict_proba(net, X, rows=rows, batch_size=batch_size)
    # Regression outputs are read as they are: a float32 module's last bit
    # depends on how rows are batched (BLAS kernels), so a sample's prediction
    # would change with the other samples predicted with it. A float64 copy
    # of the module keeps those differences far below any tolerance.
    module = copy.deepcopy(module_of(net)).double()
    out = batched(module, module, X, batch_size, rows, dtype=np.float64)
    out = out.reshape(len(out), -1)
    return check_finite_outputs(out, "outputs")
