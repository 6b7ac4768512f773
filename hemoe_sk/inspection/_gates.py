"""The flat mixtures' gates: by label (a matrix and its heatmap), per sample
(CSV), and as the one-level routing table of :func:`export_routing`.

Duck-typed on ``gate_weights``: :class:`~hemoe_sk.MixtureOfExpertsClassifier`
and :class:`~hemoe_sk.MixtureOfExpertsRegressor` both qualify.
"""

from __future__ import annotations

import numpy as np

from .._docstrings import fill_doc
from ._common import has_classes, import_pyplot, labels, resolve, write_csv

__all__ = ["export_gates", "moe_label_expert_matrix", "plot_expert_heatmap"]


def _predictions(est, X):
    """``(header, per-sample columns)`` of the estimator's prediction: the
    class and its probability for a classifier, the prediction(s) for a
    regressor."""
    if has_classes(est):
        proba = est.predict_proba(X)
        pred = proba.argmax(axis=1)
        rows = [[label, float(p[k])] for label, p, k in
                zip(labels(est.classes_, pred), proba, pred)]
        return ["predicted", "predicted_proba"], rows
    pred = np.asarray(est.predict(X), dtype=np.float64)
    if pred.ndim == 1:
        return ["predicted"], [[float(v)] for v in pred]
    return [f"predicted_{j}" for j in range(pred.shape[1])], pred.tolist()


def gate_table(estimator, X):
    """Header and rows of a flat mixture's one-level routing table
    (:func:`~hemoe_sk.inspection.export_routing`)."""
    est, X = resolve(estimator, X, needs=("gates",))
    gates = est.gate_weights(X)
    top = gates.argmax(axis=1)
    pred_header, pred_rows = _predictions(est, X)
    header = ["sample", "leaf", "path", "p_depth_0", *pred_header,
              *(f"gate_{e}" for e in range(gates.shape[1]))]
    rows = [
        [i, int(top[i]), str(int(top[i])), float(gates[i, top[i]]), *pred_rows[i],
         *(float(g) for g in gates[i])]
        for i in range(len(X))
    ]
    return header, rows


def _moe_gates(estimator, X, y):
    """``(estimator, validated X, gates, y)`` for a fitted flat mixture."""
    est, X = resolve(estimator, X, needs=("gates",))
    gates = est.gate_weights(X)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != gates.shape[0]:
        raise ValueError(f"X has {gates.shape[0]} samples but y has shape {y.shape}; "
                         "y must be 1-d with one label per sample.")
    return est, X, gates, y


@fill_doc
def moe_label_expert_matrix(estimator, X, y):
    """Mean gate weight of each expert over the samples of each label.

    Parameters
    ----------
    %(moe_estimator_X_y)s

    Returns
    -------
    labels : ndarray of shape (n_labels,)
        ``np.unique(y)``.
    matrix : ndarray of shape (n_labels, n_experts)
        Row ``i`` is the mean gate vector of the samples labelled
        ``labels[i]``.

    Examples
    --------
    %(fitted_moe_example)s
    >>> from hemoe_sk.inspection import moe_label_expert_matrix
    >>> labels, matrix = moe_label_expert_matrix(clf, X, y)
    >>> labels.tolist(), matrix.shape, bool(abs(matrix.sum(axis=1) - 1).max() < 1e-5)
    ([0, 1, 2], (3, 2), True)
    """
    _, _, gates, y = _moe_gates(estimator, X, y)
    uniq, inverse = np.unique(y, return_inverse=True)
    matrix = np.zeros((len(uniq), gates.shape[1]))
    np.add.at(matrix, inverse, gates)
    matrix /= np.bincount(inverse, minlength=len(uniq))[:, None]
    return uniq, matrix


@fill_doc
def export_gates(estimator, X, y, path):
    """Write per-sample gate weights of a flat mixture, with labels, to CSV.

    Columns: ``label`` (from ``y``), ``predicted`` (the model's prediction),
    then ``expert_0`` ... ``expert_{n_experts-1}``. :func:`export_routing`
    writes the same gates in the routing-CSV layout shared with the
    hierarchical estimators.

    Parameters
    ----------
    %(moe_estimator_X_y)s
    %(csv_path_parameter)s

    Returns
    -------
    path : str or path-like
        ``path``, for chaining.

    Examples
    --------
    >>> import os, tempfile
    %(fitted_moe_example)s
    >>> from hemoe_sk.inspection import export_gates
    >>> out = export_gates(clf, X, y, os.path.join(tempfile.mkdtemp(), "g.csv"))
    >>> with open(out) as f:
    ...     lines = f.read().splitlines()
    >>> lines[0], len(lines)
    ('label,predicted,expert_0,expert_1', 61)
    """
    est, X, gates, y = _moe_gates(estimator, X, y)
    if has_classes(est):
        predicted = labels(est.classes_, est.predict_proba(X).argmax(axis=1))
    else:
        predicted = np.asarray(est.predict(X), dtype=np.float64)
        if predicted.ndim != 1:
            raise ValueError(
                "export_gates writes one prediction per sample; this regressor "
                f"has {predicted.shape[1]} outputs. Use export_routing, which "
                "numbers them."
            )
        predicted = predicted.tolist()
    header = ["label", "predicted", *(f"expert_{e}" for e in range(gates.shape[1]))]
    rows = [[label, pred, *(float(g) for g in row)]
            for label, pred, row in zip(y.tolist(), predicted, gates, strict=True)]
    return write_csv(path, header, rows)


@fill_doc
def plot_expert_heatmap(estimator, X, y, ax=None):
    """Heatmap of :func:`moe_label_expert_matrix` (labels by experts).

    With guided gating the experts assigned to each label are outlined,
    so a well-trained gate shows a block diagonal inside the outlines.
    :class:`RoutingDisplay` shows counts of the largest gate instead of mean
    weights.

    Parameters
    ----------
    %(moe_estimator_X_y)s
    ax : matplotlib Axes, optional
        Where to draw; a new figure is created when omitted.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    Examples
    --------
    %(fitted_moe_example)s
    >>> from hemoe_sk.inspection import plot_expert_heatmap
    >>> plot_expert_heatmap(clf, X, y).images[0].get_array().shape
    (3, 2)
    """
    plt = import_pyplot("plot_expert_heatmap")
    from matplotlib.patches import Rectangle

    est, _ = resolve(estimator, None, needs=("gates",))
    uniq, matrix = moe_label_expert_matrix(estimator, X, y)
    n_experts = matrix.shape[1]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.6 * n_experts, 1.0 + 0.4 * len(uniq)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, label="mean gate weight")
    ax.set_xticks(range(n_experts))
    ax.set_xticklabels([str(e) for e in range(n_experts)])
    ax.set_yticks(range(len(uniq)))
    ax.set_yticklabels([str(label) for label in uniq])
    ax.set_xlabel("expert")
    ax.set_ylabel("label")
    gating = getattr(est, "gating", None)
    ax.set_title(f"Gate weights by label ({gating} gating)")
    if gating == "guided":
        for e, assigned in enumerate(est.expert_classes_):
            assigned = set(assigned.tolist())
            for i, label in enumerate(uniq.tolist()):
                if label in assigned:
                    ax.add_patch(Rectangle((e - 0.5, i - 0.5), 1, 1, fill=False,
                                           edgecolor="white", lw=1.5))
    return ax
