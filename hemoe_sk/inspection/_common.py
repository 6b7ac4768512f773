"""What every inspection function needs: optional imports, the fitted
estimator behind a pipeline, label and CSV helpers.

Duck-typed: an estimator qualifies by what it has (a fitted ``tree_``, a
``gate_weights`` method), not by its class, so the hierarchical classifier
and regressor (and the two flat mixtures) are served by one code path, and
nothing here imports an estimator module.
"""

from __future__ import annotations

import csv
import importlib
import math
import numbers

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

#: What each kind of inspection needs of the final estimator: the attribute
#: it reads, and the estimators that have it (for the error message).
_NEEDS = {
    "tree": ("tree_", "a HierarchicalEmbeddingMoEClassifier or "
                      "HierarchicalEmbeddingMoERegressor"),
    "gates": ("gate_weights", "a MixtureOfExpertsClassifier or "
                              "MixtureOfExpertsRegressor"),
}


def require(module, needed_by, install):
    """Import ``module``, or raise an ImportError naming what needs it and
    how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{needed_by} needs {module.partition('.')[0]}; install it with {install}."
        ) from exc


def import_pyplot(what):
    return require(
        "matplotlib.pyplot", what,
        "`pip install hemoe_sk[plot]` (or `pip install matplotlib`)",
    )


def import_pandas():
    return require(
        "pandas", "as_frame=True",
        "`pip install pandas`, or use the list of records (as_frame=False)",
    )


def final_estimator(estimator):
    """The last step of a pipeline, or the estimator itself."""
    if hasattr(estimator, "steps") and estimator.steps:
        return estimator.steps[-1][1]
    return estimator


def resolve(estimator, X, needs=("tree",)):
    """``(final estimator, X validated for it)``.

    The final estimator must be fitted and have one of ``needs`` (keys of
    :data:`_NEEDS`). A fitted :class:`~sklearn.pipeline.Pipeline` is
    accepted: ``X`` goes through its first steps' ``transform``.
    """
    final = final_estimator(estimator)
    wanted = " or ".join(_NEEDS[n][1] for n in needs)
    if not hasattr(final, "fit"):
        raise TypeError(
            f"Expected {wanted} (or a Pipeline ending in one), got "
            f"{type(final).__name__}."
        )
    check_is_fitted(final)
    if not any(hasattr(final, _NEEDS[n][0]) for n in needs):
        have = " or ".join(f"`{_NEEDS[n][0]}`" for n in needs)
        raise TypeError(
            f"Expected {wanted} (or a Pipeline ending in one): a fitted estimator "
            f"with {have}; got {type(final).__name__}."
        )
    if X is not None:
        if final is not estimator and len(estimator.steps) > 1:
            X = estimator[:-1].transform(X)
        X = validate_data(final, X, reset=False, dtype=np.float32)
    return final, X


def has_classes(est):
    """Whether ``est`` is a classifier with ``classes_`` (its leaves or
    experts give class probabilities); a regressor's give standardised
    outputs instead."""
    return getattr(est, "classes_", None) is not None


def labels(classes, values):
    """Class labels as plain Python values (for records, CSV and text)."""
    return np.asarray(classes)[values].tolist()


def check_y(y, n):
    """``y`` as a 1-d array of ``n`` labels (``None`` passes through)."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1-d with one label per sample of X ({n}); "
                         f"got shape {y.shape}.")
    return y


def inner_node(tree, node):
    """The inner node ``node`` of ``tree``, or a clear error."""
    inner = [n.node_id for n in tree.nodes if not n.is_leaf]
    where = (
        f"the inner nodes (those that route) are {inner}"
        if inner
        else "this tree is a single leaf and routes nothing"
    )
    if isinstance(node, bool) or not isinstance(node, numbers.Integral):
        raise TypeError(
            f"node must be an integer node id, got {node!r} ({type(node).__name__}); "
            f"{where}."
        )
    node = int(node)
    if not 0 <= node < tree.node_count:
        raise ValueError(
            f"node={node} does not exist: the tree has nodes 0..{tree.node_count - 1}; "
            f"{where}."
        )
    if tree.nodes[node].is_leaf:
        raise ValueError(
            f"node={node} is a leaf: it routes nothing, so there is no routing to "
            f"explain; {where}."
        )
    return tree.nodes[node]


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_csv(path, header, rows):
    """Write ``header`` and ``rows`` (floats to 6 significant digits, NaN
    empty) to ``path``; return ``path``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_fmt(v) for v in row])
    return path
