"""Explaining a fitted tree: route paths, routing CSVs, routing attributions
and displays.

This is an inspection layer *above* the estimators: it reads a fitted
:class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier` (or
:class:`~hemoe_sk.MixtureOfExpertsClassifier`), never changes it, and the
estimators import it only lazily.

* :func:`explain_routes` -- per sample, the path root to leaf with every
  child's routing probability at every node, the child taken and its training
  class counts, and the leaf's top classes; :func:`format_route` writes one
  record as text.
* :func:`export_routing` -- the same, one CSV row per sample.
* :func:`routing_module` -- the node's soft assignment as a differentiable
  torch module (input rows -> routing probabilities), equal to the router's
  ``predict_proba`` on the node's embeddings.
* :func:`route_attributions` -- which features (or pixels) push a sample
  toward its cluster at a node, with captum's ``IntegratedGradients`` (MLPs)
  or ``LayerGradCam`` (convolutional embedders) on :func:`routing_module`.
* :class:`RoutingDisplay`, :class:`TreeDisplay`, :class:`AttributionDisplay`
  -- matplotlib displays in scikit-learn's style (``from_estimator``,
  ``plot``, ``ax_``, ``figure_``).

matplotlib, captum and pandas are optional: each is imported only where it
is used, with an error naming the extra to install.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import math
import numbers

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._docstrings import fill_doc
from .classifier import HierarchicalEmbeddingMoEClassifier
from .cluster.torch_routing import router_scores
from .moe import MixtureOfExpertsClassifier
from .nn.inference import _embedding_fn, embed
from .nn.inference import module_of as _module_of

__all__ = [
    "AttributionDisplay",
    "RoutingDisplay",
    "TreeDisplay",
    "explain_routes",
    "export_gates",
    "export_routing",
    "format_route",
    "moe_label_expert_matrix",
    "plot_expert_heatmap",
    "route_attributions",
    "routing_module",
]


# --------------------------------------------------------------------------
# Optional dependencies
# --------------------------------------------------------------------------


def _require(module, needed_by, install):
    """Import ``module``, or raise an ImportError naming what needs it and
    how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{needed_by} needs {module.partition('.')[0]}; install it with {install}."
        ) from exc


def _import_pyplot(what):
    return _require(
        "matplotlib.pyplot", what,
        "`pip install hemoe_sk[plot]` (or `pip install matplotlib`)",
    )


def _import_captum():
    attr = _require(
        "captum.attr", "route_attributions",
        "`pip install hemoe_sk[explain]` (or `pip install captum`)",
    )
    return attr.IntegratedGradients, attr.LayerGradCam, attr.LayerAttribution


def _import_pandas():
    return _require(
        "pandas", "as_frame=True",
        "`pip install pandas`, or use the list of records (as_frame=False)",
    )


# --------------------------------------------------------------------------
# Estimators and pipelines
# --------------------------------------------------------------------------


def _resolve(estimator, X, kinds=(HierarchicalEmbeddingMoEClassifier,)):
    """``(final estimator, X validated for it)``.

    A fitted :class:`~sklearn.pipeline.Pipeline` ending in one of ``kinds`` is
    accepted: ``X`` goes through its first steps' ``transform``.
    """
    final = estimator
    if hasattr(estimator, "steps") and estimator.steps:
        final = estimator.steps[-1][1]
        if X is not None and len(estimator.steps) > 1:
            X = estimator[:-1].transform(X)
    if not isinstance(final, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(
            f"Expected a fitted {names} (or a Pipeline ending in one), got "
            f"{type(final).__name__}."
        )
    check_is_fitted(final)
    if X is not None:
        X = validate_data(final, X, reset=False, dtype=np.float32)
    return final, X


def _labels(classes, values):
    """Class labels as plain Python values (for records, CSV and text)."""
    return np.asarray(classes)[values].tolist()


def _check_y(y, n):
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1-d with one label per sample of X ({n}); "
                         f"got shape {y.shape}.")
    return y


# --------------------------------------------------------------------------
# Route paths
# --------------------------------------------------------------------------


def _walk_routes(clf, X):
    """Hard-route ``X`` down ``clf.tree_``, recording every decision.

    Returns ``(steps, leaf, leaf_proba)``: ``steps[i]`` is the list of
    ``(node_id, routing probabilities over the node's children, chosen
    child position)`` along sample ``i``'s path; ``leaf`` the leaf ids (the
    same as ``tree_.apply``); ``leaf_proba`` the leaf experts' class
    probabilities.
    """
    tree = clf.tree_
    n = len(X)
    steps = [[] for _ in range(n)]
    leaf = np.empty(n, dtype=np.intp)
    leaf_proba = np.zeros((n, tree.n_classes))
    stack = [(tree.nodes[0], np.arange(n))]
    while stack:
        node, rows = stack.pop()
        needs_e = not node.is_leaf or node.classifier.needs_embedding
        E = embed(node.embedder, X, rows=rows) if needs_e else None
        if node.is_leaf:
            leaf[rows] = node.node_id
            leaf_proba[rows] = node.classifier.predict_proba(X, rows, E)
            continue
        share = node.router.predict_proba(E)
        # Hard routing follows the router's predict (what apply follows).
        choice = node.router.predict(E)
        for i, r in enumerate(rows):
            steps[r].append((node.node_id, share[i], int(choice[i])))
        for c, child in enumerate(node.children):
            keep = choice == c
            if keep.any():
                stack.append((tree.nodes[child], rows[keep]))
    return steps, leaf, leaf_proba


@fill_doc
def explain_routes(estimator, X, *, top_k=3, as_frame=False):
    """The route of every sample from the root to its leaf.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier or Pipeline
        Fitted; a pipeline's first steps transform ``X``.
    X : array-like of shape (n_samples, n_features)
        Samples to explain.
    top_k : int, default=3
        Number of the leaf's most probable classes to report.
    as_frame : bool, default=False
        Return a :class:`pandas.DataFrame` (one row per sample, the columns
        of :func:`export_routing` less ``label``) instead of records.

    Returns
    -------
    records : list of dict, or pandas.DataFrame
        One record per sample, with keys

        - ``sample``: row index in ``X``;
        - ``leaf``: leaf id under hard routing (equal to ``apply(X)``);
        - ``path``: node ids from the root to the leaf (the nodes
          ``decision_path`` marks);
        - ``steps``: one dict per inner node on the path, with ``node``,
          ``depth``, ``children`` (child node ids), ``routing_proba`` (the
          router's probability of every child, summing to 1), ``child`` (the
          child taken), ``proba`` (its routing probability),
          ``child_n_samples`` and ``child_class_counts`` (training samples of
          the child, by class, zero counts left out);
        - ``path_proba``: product of the ``proba`` along the path (the
          leaf's weight under soft routing);
        - ``leaf_classes`` and ``leaf_proba``: the leaf expert's ``top_k``
          classes and their probabilities;
        - ``prediction`` and ``prediction_proba``: the estimator's own
          prediction (with its ``routing``) and its probability.

    See Also
    --------
    format_route : One record as readable text.
    export_routing : The same as a CSV file.

    Examples
    --------
    %(fitted_tree_example)s
    >>> from hemoe_sk.inspection import explain_routes
    >>> records = explain_routes(clf, X[:2])
    >>> [r["leaf"] for r in records] == clf.apply(X[:2]).tolist()
    True
    """
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    clf, X = _resolve(estimator, X)
    tree = clf.tree_
    classes = clf.classes_
    steps, leaf, leaf_proba = _walk_routes(clf, X)
    model_proba = tree.predict_proba(X, routing=clf.routing)
    predicted = model_proba.argmax(axis=1)
    k = min(int(top_k), tree.n_classes)
    records = []
    for i in range(len(X)):
        rec_steps, path, path_proba = [], [], 1.0
        for node_id, share, c in steps[i]:
            node = tree.nodes[node_id]
            child = tree.nodes[node.children[c]]
            counts = child.class_counts
            nonzero = np.flatnonzero(counts)
            rec_steps.append({
                "node": node_id,
                "depth": node.depth,
                "children": list(node.children),
                "routing_proba": [float(p) for p in share],
                "child": child.node_id,
                "proba": float(share[c]),
                "child_n_samples": int(child.n_samples),
                "child_class_counts": dict(
                    zip(_labels(classes, nonzero), counts[nonzero].tolist())
                ),
            })
            path.append(node_id)
            path_proba *= float(share[c])
        path.append(int(leaf[i]))
        order = np.argsort(-leaf_proba[i], kind="stable")[:k]
        records.append({
            "sample": i,
            "leaf": int(leaf[i]),
            "path": path,
            "steps": rec_steps,
            "path_proba": path_proba,
            "leaf_classes": _labels(classes, order),
            "leaf_proba": [float(p) for p in leaf_proba[i, order]],
            "prediction": _labels(classes, [predicted[i]])[0],
            "prediction_proba": float(model_proba[i, predicted[i]]),
        })
    if as_frame:
        pd = _import_pandas()
        header, rows = _route_table(records, tree.max_depth)
        return pd.DataFrame(rows, columns=header)
    return records


def _route_table(records, max_depth):
    """Header and rows of the routing table (CSV and DataFrame)."""
    levels = [f"p_depth_{d}" for d in range(max_depth)]
    header = [
        "sample", "leaf", "path", *levels, "path_proba", "leaf_class",
        "leaf_class_proba", "predicted", "predicted_proba",
    ]
    rows = []
    for r in records:
        ps = [s["proba"] for s in r["steps"]]
        ps += [float("nan")] * (max_depth - len(ps))
        rows.append([
            r["sample"], r["leaf"], ">".join(str(p) for p in r["path"]), *ps,
            r["path_proba"], r["leaf_classes"][0], r["leaf_proba"][0],
            r["prediction"], r["prediction_proba"],
        ])
    return header, rows


def format_route(record, *, decimals=3):
    """One record of :func:`explain_routes` as readable text.

    Parameters
    ----------
    record : dict
        An element of ``explain_routes(clf, X)``.
    decimals : int, default=3
        Digits of the probabilities.

    Returns
    -------
    text : str
        A line for the sample and its prediction, then per inner node on the
        path the routing probability of every child, the child taken and its
        training class counts, then the leaf's top classes.

    Examples
    --------
    >>> record = {
    ...     "sample": 0, "leaf": 2, "path": [0, 2], "path_proba": 0.9,
    ...     "steps": [{"node": 0, "depth": 0, "children": [1, 2],
    ...                "routing_proba": [0.1, 0.9], "child": 2, "proba": 0.9,
    ...                "child_n_samples": 50, "child_class_counts": {"a": 45, "b": 5}}],
    ...     "leaf_classes": ["a", "b"], "leaf_proba": [0.8, 0.2],
    ...     "prediction": "a", "prediction_proba": 0.79}
    >>> print(format_route(record))
    sample 0 -> leaf 2 (path 0 > 2), predicted a (p=0.790)
      node 0 (depth 0): child 1: 0.100, child 2: 0.900 -> node 2 (p=0.900)
          node 2 trained on 50 samples: a: 45, b: 5
      leaf 2: a 0.800, b 0.200 (path probability 0.900)
    """
    f = f".{int(decimals)}f"
    lines = [
        f"sample {record['sample']} -> leaf {record['leaf']} (path "
        f"{' > '.join(str(p) for p in record['path'])}), predicted "
        f"{record['prediction']} (p={record['prediction_proba']:{f}})"
    ]
    for s in record["steps"]:
        shares = ", ".join(
            f"child {c}: {p:{f}}" for c, p in zip(s["children"], s["routing_proba"])
        )
        lines.append(
            f"  node {s['node']} (depth {s['depth']}): {shares} -> node {s['child']} "
            f"(p={s['proba']:{f}})"
        )
        counts = ", ".join(f"{k}: {v}" for k, v in s["child_class_counts"].items())
        lines.append(
            f"      node {s['child']} trained on {s['child_n_samples']} samples: {counts}"
        )
    top = ", ".join(
        f"{c} {p:{f}}" for c, p in zip(record["leaf_classes"], record["leaf_proba"])
    )
    lines.append(
        f"  leaf {record['leaf']}: {top} (path probability {record['path_proba']:{f}})"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Routing CSV
# --------------------------------------------------------------------------


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


@fill_doc
def export_routing(estimator, X, y, path):
    """Write one CSV row per sample: label, leaf, path and routing
    probabilities, prediction.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier, MixtureOfExpertsClassifier \
            or Pipeline
        Fitted; a pipeline's first steps transform ``X``.
    X : array-like of shape (n_samples, n_features)
        Samples.
    y : array-like of shape (n_samples,) or None
        Their true labels; ``None`` leaves the ``label`` column out.
    %(csv_path_parameter)s

    Returns
    -------
    path : str or path-like
        ``path``, for chaining.

    Notes
    -----
    For the hierarchical classifier the columns are ``label``, ``sample``,
    ``leaf`` (as ``apply``), ``path`` (node ids joined by ``>``),
    ``p_depth_0`` ... (the routing probability of the child taken at every
    depth, empty below the leaf), ``path_proba`` (their product),
    ``leaf_class`` and ``leaf_class_proba`` (the leaf expert's top class),
    ``predicted`` and ``predicted_proba`` (the estimator's prediction with
    its ``routing``).

    For :class:`~hemoe_sk.MixtureOfExpertsClassifier` the flat gate is one
    level: ``leaf`` is the expert with the largest gate weight, ``path`` is
    that expert's id, ``p_depth_0`` its gate weight, then ``predicted``,
    ``predicted_proba`` and ``gate_0`` ... (every expert's gate weight).

    Examples
    --------
    >>> import csv, os, tempfile
    %(fitted_tree_example)s
    >>> from hemoe_sk.inspection import export_routing
    >>> out = export_routing(clf, X, y, os.path.join(tempfile.mkdtemp(), "r.csv"))
    >>> with open(out) as f:
    ...     rows = list(csv.DictReader(f))
    >>> len(rows), rows[0]["leaf"] == str(clf.apply(X[:1])[0])
    (200, True)
    """
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if isinstance(final, MixtureOfExpertsClassifier):
        header, rows = _moe_table(estimator, X)
    else:
        records = explain_routes(estimator, X)
        header, rows = _route_table(records, final.tree_.max_depth)
    y = _check_y(y, len(rows))
    if y is not None:
        header = ["label", *header]
        rows = [[label, *row] for label, row in zip(y.tolist(), rows)]
    return _write_csv(path, header, rows)


def _moe_table(estimator, X):
    clf, X = _resolve(estimator, X, kinds=(MixtureOfExpertsClassifier,))
    gates = clf.gate_weights(X)
    proba = clf.predict_proba(X)
    top = gates.argmax(axis=1)
    pred = proba.argmax(axis=1)
    header = [
        "sample", "leaf", "path", "p_depth_0", "predicted", "predicted_proba",
        *(f"gate_{e}" for e in range(gates.shape[1])),
    ]
    rows = [
        [i, int(top[i]), str(int(top[i])), float(gates[i, top[i]]),
         _labels(clf.classes_, [pred[i]])[0], float(proba[i, pred[i]]),
         *(float(g) for g in gates[i])]
        for i in range(len(X))
    ]
    return header, rows


# --------------------------------------------------------------------------
# Flat mixture of experts: gates by label
# --------------------------------------------------------------------------


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_fmt(v) for v in row])
    return path


def _moe_gates(estimator, X, y):
    """``(clf, validated X, gates, y)`` for a fitted flat mixture."""
    clf, X = _resolve(estimator, X, kinds=(MixtureOfExpertsClassifier,))
    gates = clf.gate_weights(X)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != gates.shape[0]:
        raise ValueError(f"X has {gates.shape[0]} samples but y has shape {y.shape}; "
                         "y must be 1-d with one label per sample.")
    return clf, X, gates, y


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
    labels, inverse = np.unique(y, return_inverse=True)
    matrix = np.zeros((len(labels), gates.shape[1]))
    np.add.at(matrix, inverse, gates)
    matrix /= np.bincount(inverse, minlength=len(labels))[:, None]
    return labels, matrix


@fill_doc
def export_gates(estimator, X, y, path):
    """Write per-sample gate weights of a flat mixture, with labels, to CSV.

    Columns: ``label`` (from ``y``), ``predicted`` (the model's prediction),
    then ``expert_0`` ... ``expert_{n_experts-1}``. :func:`export_routing`
    writes the same gates in the routing-CSV layout shared with the
    hierarchical classifier.

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
    clf, X, gates, y = _moe_gates(estimator, X, y)
    predicted = _labels(clf.classes_, clf.predict_proba(X).argmax(axis=1))
    header = ["label", "predicted", *(f"expert_{e}" for e in range(gates.shape[1]))]
    rows = [[label, pred, *(float(g) for g in row)]
            for label, pred, row in zip(y.tolist(), predicted, gates, strict=True)]
    return _write_csv(path, header, rows)


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
    plt = _import_pyplot("plot_expert_heatmap")
    from matplotlib.patches import Rectangle

    clf = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    labels, matrix = moe_label_expert_matrix(estimator, X, y)
    n_experts = matrix.shape[1]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.6 * n_experts, 1.0 + 0.4 * len(labels)))
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(image, ax=ax, label="mean gate weight")
    ax.set_xticks(range(n_experts))
    ax.set_xticklabels([str(e) for e in range(n_experts)])
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([str(label) for label in labels])
    ax.set_xlabel("expert")
    ax.set_ylabel("label")
    ax.set_title(f"Gate weights by label ({clf.gating} gating)")
    if clf.gating == "guided":
        for e, assigned in enumerate(clf.expert_classes_):
            assigned = set(assigned.tolist())
            for i, label in enumerate(labels.tolist()):
                if label in assigned:
                    ax.add_patch(Rectangle((e - 0.5, i - 0.5), 1, 1, fill=False,
                                           edgecolor="white", lw=1.5))
    return ax


# --------------------------------------------------------------------------
# Differentiable routing
# --------------------------------------------------------------------------


def _inner_node(clf, node):
    """The inner node ``node`` of ``clf.tree_``, or a clear error."""
    tree = clf.tree_
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


class _RoutingModule(nn.Module):
    """Input rows -> a node's routing probabilities (or log-similarities)."""

    def __init__(self, embedder, router, output):
        super().__init__()
        self.embedder = embedder
        self._embed = _embedding_fn(embedder)
        p = next(embedder.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        self.scores = router_scores(router, device)
        self.output = output
        self.n_clusters = int(router.n_clusters)

    def forward(self, x):
        e = self._embed(x).reshape(len(x), -1).double()
        s = self.scores(e)
        if self.output == "similarity":
            return s
        return torch.softmax(s, dim=1)


@contextlib.contextmanager
def _evaluating(module):
    """Eval mode (no dropout) inside, every submodule's mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@fill_doc
def routing_module(estimator, node=0, *, output="proba"):
    """A node's routing as a differentiable torch module.

    The module maps input rows (a float32 tensor of shape ``(n,
    n_features)``, already transformed by a pipeline's first steps) through
    the node's embedder network, the router's reducer and clusterer, to the
    routing probabilities of the node's children. With ``output="proba"``
    it equals ``node.router.predict_proba(embeddings)``; gradients flow back
    to the input.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier or Pipeline
        Fitted.
    node : int, default=0
        Id of an inner node (one that routes).
    output : {"proba", "similarity"}, default="proba"
        ``"proba"``: routing probabilities, rows summing to 1.
        ``"similarity"``: the unnormalised log-kernel of every cluster, whose
        softmax is ``"proba"``: for DEC and centroid routers the Student-t
        similarity to each centre, ``-(alpha + 1) / 2 * log(1 + d^2 /
        alpha)`` (alpha = 1 for k-means), for a Gaussian mixture the weighted
        log-likelihood, for the mixture of autoencoders the scaled negative
        reconstruction error. It depends on the chosen centre alone, not on
        the competing ones.

    Returns
    -------
    module : torch.nn.Module
        Shares the fitted networks (it copies nothing): put it in eval mode
        to drop dropout, and do not train it. Its ``n_clusters`` attribute
        is the number of children.

    Raises
    ------
    TypeError
        If the router has no differentiable form (a vote, a one-hot router,
        a reducer other than PCA or StandardScaler); the message names it.

    Examples
    --------
    >>> import numpy as np, torch
    %(fitted_tree_example)s
    >>> from hemoe_sk.inspection import routing_module
    >>> from hemoe_sk.nn.nets import embed
    >>> module = routing_module(clf, 0).eval()
    >>> with torch.no_grad():
    ...     q = module(torch.as_tensor(X[:5], dtype=torch.float32)).numpy()
    >>> root = clf.tree_.nodes[0]
    >>> bool(np.allclose(q, root.router.predict_proba(embed(root.embedder, X[:5]))))
    True
    """
    if output not in ("proba", "similarity"):
        raise ValueError(f"output must be 'proba' or 'similarity', got {output!r}.")
    clf, _ = _resolve(estimator, None)
    node = _inner_node(clf, node)
    return _RoutingModule(_module_of(node.embedder), node.router, output)


# --------------------------------------------------------------------------
# Attributions
# --------------------------------------------------------------------------


def _image_shape(module, image_shape=None):
    shape = image_shape if image_shape is not None else getattr(module, "image_shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


@fill_doc
def route_attributions(
    estimator,
    X,
    node=0,
    *,
    target=None,
    output="proba",
    method="auto",
    layer=None,
    baseline=None,
    n_steps=32,
):
    """Which features (or pixels) push each sample toward its cluster at a node.

    The gradient of the node's soft assignment to a cluster (see
    :func:`routing_module`) through the node's embedder network, attributed
    to the input with captum:

    * ``"integrated_gradients"`` (captum's ``IntegratedGradients``): the
      path integral of the gradient from ``baseline`` to the sample, times
      the difference; the attributions of a sample add up (to the integral's
      accuracy) to ``f(x) - f(baseline)``. The default for MLP embedders.
    * ``"gradcam"`` (captum's ``LayerGradCam``, Grad-CAM of Selvaraju et al.
      with the routing probability as its target): the last convolution's
      activations weighted by the spatially averaged gradients, ReLU'd, and
      upsampled (bilinear) to the image. The default for
      :class:`~hemoe_sk.nn.ConvEmbedder` and
      :class:`~hemoe_sk.nn.DeepMoEEmbedder`. With ``output="similarity"`` the
      target is the latent similarity to the chosen centre, which makes it a
      Grad-CAM on the latent space in the spirit of Grad-LAM (Bartler et
      al., EUSIPCO 2020); Grad-LAM's decoder-based weighting is not
      implemented.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier or Pipeline
        Fitted; a pipeline's first steps transform ``X`` and the
        attributions are those of the transformed features.
    X : array-like of shape (n_samples, n_features)
        Samples to explain.
    node : int, default=0
        Id of an inner node (one that routes). Every sample is explained at
        that node, whether or not hard routing brings it there.
    target : None, int or array-like of int, default=None
        Cluster (child position, ``0 .. n_children - 1``) to explain;
        ``None`` takes the one each sample is routed to at ``node``.
    output : {"proba", "similarity"}, default="proba"
        What is differentiated, as in :func:`routing_module`.
    method : {"auto", "integrated_gradients", "gradcam"}, default="auto"
        ``"auto"`` is ``"gradcam"`` when the embedder has convolutions and
        an ``image_shape``, else ``"integrated_gradients"``.
    layer : torch.nn.Module or None, default=None
        The convolution for Grad-CAM; ``None`` takes the embedder's last
        ``nn.Conv2d``.
    baseline : None, float or array-like of shape (n_features,), default=None
        Integrated gradients' reference input; ``None`` is all zeros (black
        images; the mean for standardised features).
    n_steps : int, default=32
        Integration steps of integrated gradients.

    Returns
    -------
    attributions : ndarray of shape (n_samples, n_features)
        The input's shape. Grad-CAM maps are repeated over the image's
        channels. Deterministic: the networks run in eval mode.

    Raises
    ------
    ImportError
        If captum is not installed (``pip install hemoe_sk[explain]``).
    ValueError
        For a node that does not exist or is a leaf, a target out of range,
        or Grad-CAM on an embedder without convolutions.
    TypeError
        If the node's router has no differentiable form.

    Examples
    --------
    %(fitted_tree_example)s
    >>> from hemoe_sk.inspection import route_attributions
    >>> route_attributions(clf, X[:3], node=0).shape
    (3, 2)
    """
    if method not in ("auto", "integrated_gradients", "gradcam"):
        raise ValueError(
            "method must be 'auto', 'integrated_gradients' or 'gradcam', got "
            f"{method!r}."
        )
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
    clf, X = _resolve(estimator, X)
    node_obj = _inner_node(clf, node)
    model = routing_module(clf, node_obj.node_id, output=output)
    n_clusters = model.n_clusters
    embedder = model.embedder
    convs = [m for m in embedder.modules() if isinstance(m, nn.Conv2d)]
    shape = _image_shape(embedder)
    if method == "auto":
        method = "gradcam" if convs and shape is not None else "integrated_gradients"
    if method == "gradcam":
        if layer is None and not convs:
            raise ValueError(
                f"method='gradcam' needs a convolutional embedder; node "
                f"{node_obj.node_id}'s is {type(embedder).__name__}, without nn.Conv2d "
                "layers. Use method='integrated_gradients'."
            )
        if shape is None or len(shape) != 3 or math.prod(shape) != X.shape[1]:
            raise ValueError(
                f"method='gradcam' needs the embedder's image_shape (channels, "
                f"height, width) matching the {X.shape[1]} features; "
                f"{type(embedder).__name__} has image_shape={shape}."
            )
    if target is None:
        target = node_obj.router.predict(embed(node_obj.embedder, X))
    target = np.broadcast_to(np.asarray(target), (len(X),))
    if not np.issubdtype(target.dtype, np.integer) or (
        len(target) and (target.min() < 0 or target.max() >= n_clusters)
    ):
        raise ValueError(
            f"target must hold cluster indices in 0..{n_clusters - 1} (node "
            f"{node_obj.node_id} has {n_clusters} children), got {target!r}."
        )
    IntegratedGradients, LayerGradCam, LayerAttribution = _import_captum()
    device = next(embedder.parameters()).device
    x = torch.as_tensor(X, dtype=torch.float32, device=device)
    t = torch.as_tensor(target.astype(np.int64), device=device)
    with _evaluating(model):
        if method == "integrated_gradients":
            base = torch.zeros_like(x) if baseline is None else torch.as_tensor(
                np.broadcast_to(np.asarray(baseline, dtype=np.float32), X.shape).copy(),
                device=device,
            )
            attr = IntegratedGradients(model).attribute(
                x, baselines=base, target=t, n_steps=int(n_steps)
            )
        else:
            cam = LayerGradCam(model, layer if layer is not None else convs[-1])
            maps = cam.attribute(x, target=t, relu_attributions=True)
            maps = LayerAttribution.interpolate(maps, shape[1:], "bilinear")
            attr = maps.expand(len(X), shape[0], *shape[1:]).reshape(len(X), -1)
    return attr.detach().double().cpu().numpy()


# --------------------------------------------------------------------------
# Displays
# --------------------------------------------------------------------------


def _class_colors(n):
    plt = _import_pyplot("The display")
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


@fill_doc
class RoutingDisplay:
    """Heatmap of true labels by leaves, with counts.

    Cell ``(label, leaf)`` is coloured by the share of the label's samples
    routed to that leaf and shows their count: a leaf that specialises shows
    as a column with few bright cells, a label split across leaves as a row
    with several.

    Create it with :meth:`from_estimator` or :meth:`from_predictions`; the
    constructor takes the counts directly.

    Parameters
    ----------
    counts : ndarray of shape (n_labels, n_leaves)
        Samples of each label at each leaf.
    labels : array-like of shape (n_labels,)
        Row names.
    leaves : array-like of shape (n_leaves,)
        Column names (leaf ids, or expert ids for a flat mixture).
    leaf_name : str, default="leaf"
        Axis label of the columns.

    Attributes
    ----------
    im_ : matplotlib AxesImage
    text_ : ndarray of matplotlib Text
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> from hemoe_sk.inspection import RoutingDisplay
    >>> disp = RoutingDisplay.from_predictions([0, 0, 1, 1, 1], [3, 3, 3, 4, 4])
    >>> disp.counts.tolist()
    [[2, 0], [1, 2]]
    """

    def __init__(self, counts, labels, leaves, *, leaf_name="leaf"):
        self.counts = np.asarray(counts)
        self.labels = np.asarray(labels)
        self.leaves = np.asarray(leaves)
        self.leaf_name = leaf_name

    @classmethod
    def from_predictions(cls, y_true, leaf, *, leaf_name="leaf", ax=None, cmap="Blues",
                         colorbar=True):
        """Display from true labels and the leaf of every sample.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
        leaf : array-like of shape (n_samples,)
            Leaf (or expert) of every sample, e.g. ``clf.apply(X)``.
        leaf_name : str, default="leaf"
        %(heatmap_parameters)s

        Returns
        -------
        display : RoutingDisplay
        """
        y_true = np.asarray(y_true)
        leaf = np.asarray(leaf)
        if y_true.shape != leaf.shape or y_true.ndim != 1:
            raise ValueError(
                f"y_true and leaf must be 1-d and of one length; got {y_true.shape} "
                f"and {leaf.shape}."
            )
        labels, li = np.unique(y_true, return_inverse=True)
        leaves, ji = np.unique(leaf, return_inverse=True)
        counts = np.zeros((len(labels), len(leaves)), dtype=np.int64)
        np.add.at(counts, (li, ji), 1)
        display = cls(counts, labels, leaves, leaf_name=leaf_name)
        if ax is not False:
            display.plot(ax=ax, cmap=cmap, colorbar=colorbar)
        return display

    @classmethod
    def from_estimator(cls, estimator, X, y, *, ax=None, cmap="Blues", colorbar=True):
        """Display from a fitted estimator, samples and their true labels.

        Parameters
        ----------
        estimator : HierarchicalEmbeddingMoEClassifier, \
                MixtureOfExpertsClassifier or Pipeline
            Leaves are ``apply(X)``; for the flat mixture, the expert with
            the largest gate weight.
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        %(heatmap_parameters)s

        Returns
        -------
        display : RoutingDisplay
        """
        clf, Xv = _resolve(
            estimator, X,
            kinds=(HierarchicalEmbeddingMoEClassifier, MixtureOfExpertsClassifier),
        )
        if isinstance(clf, MixtureOfExpertsClassifier):
            leaf, name = clf.gate_weights(Xv).argmax(axis=1), "expert (largest gate)"
        else:
            leaf, name = clf.tree_.apply(Xv), "leaf"
        y = _check_y(y, len(Xv))
        return cls.from_predictions(y, leaf, leaf_name=name, ax=ax, cmap=cmap,
                                    colorbar=colorbar)

    def plot(self, *, ax=None, cmap="Blues", colorbar=True):
        """Draw the heatmap.

        Parameters
        ----------
        %(heatmap_parameters)s

        Returns
        -------
        display : RoutingDisplay
            ``self``, with ``ax_``, ``figure_``, ``im_`` and ``text_`` set.
        """
        plt = _import_pyplot("RoutingDisplay")
        n_labels, n_leaves = self.counts.shape
        if ax is None:
            _, ax = plt.subplots(
                figsize=(2.0 + 0.6 * n_leaves, 1.2 + 0.35 * n_labels)
            )
        totals = self.counts.sum(axis=1, keepdims=True)
        share = self.counts / np.where(totals > 0, totals, 1)
        self.im_ = ax.imshow(share, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0)
        cmap_obj = self.im_.cmap
        self.text_ = np.empty(self.counts.shape, dtype=object)
        for i in range(n_labels):
            for j in range(n_leaves):
                colour = cmap_obj(0.0) if share[i, j] > 0.5 else cmap_obj(1.0)
                self.text_[i, j] = ax.text(
                    j, i, str(int(self.counts[i, j])), ha="center", va="center",
                    color=colour, fontsize=8,
                )
        if colorbar:
            ax.figure.colorbar(self.im_, ax=ax, label="share of the label's samples")
        ax.set_xticks(range(n_leaves))
        ax.set_xticklabels([str(v) for v in self.leaves])
        ax.set_yticks(range(n_labels))
        ax.set_yticklabels([str(v) for v in self.labels])
        ax.set_xlabel(self.leaf_name)
        ax.set_ylabel("true label")
        ax.set_title("Where each label is routed")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self


class TreeDisplay:
    """The fitted tree: one pie per node, sized by its training samples and
    split by their classes.

    Parameters
    ----------
    parents : array-like of int
        Parent id of every node (``-1`` for the root), in node-id order.
    depths : array-like of int
    n_samples : array-like of int
        Training samples of every node.
    class_counts : ndarray of shape (n_nodes, n_classes)
    class_names : array-like of shape (n_classes,)
    leaf_accuracy : dict, default=None
        ``{leaf id: training accuracy}``, shown under the leaves.

    Attributes
    ----------
    positions_ : ndarray of shape (n_nodes, 2)
        Centre of every node's pie.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> from hemoe_sk.inspection import TreeDisplay
    >>> disp = TreeDisplay([-1, 0, 0], [0, 1, 1], [10, 6, 4],
    ...                    [[5, 5], [5, 1], [0, 4]], ["a", "b"]).plot()
    >>> disp.positions_.tolist()
    [[0.5, 0.0], [0.0, -1.3], [1.0, -1.3]]
    """

    def __init__(self, parents, depths, n_samples, class_counts, class_names, *,
                 leaf_accuracy=None):
        self.parents = np.asarray(parents, dtype=int)
        self.depths = np.asarray(depths, dtype=int)
        self.n_samples = np.asarray(n_samples)
        self.class_counts = np.asarray(class_counts)
        self.class_names = list(class_names)
        self.leaf_accuracy = dict(leaf_accuracy or {})

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Display the tree of a fitted classifier (or a pipeline ending in one).

        Parameters
        ----------
        estimator : HierarchicalEmbeddingMoEClassifier or Pipeline
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : TreeDisplay
        """
        clf, _ = _resolve(estimator, None)
        nodes = clf.tree_.nodes
        display = cls(
            [n.parent for n in nodes],
            [n.depth for n in nodes],
            [n.n_samples for n in nodes],
            np.stack([n.class_counts for n in nodes]),
            [str(c) for c in clf.classes_],
            leaf_accuracy={n.node_id: n.train_accuracy for n in nodes if n.is_leaf},
        )
        return display.plot(ax=ax)

    def _layout(self):
        n = len(self.parents)
        children = [[] for _ in range(n)]
        for i, p in enumerate(self.parents):
            if p >= 0:
                children[p].append(i)
        x = np.zeros(n)
        next_leaf = [0.0]

        def place(i):
            if not children[i]:
                x[i] = next_leaf[0]
                next_leaf[0] += 1.0
            else:
                for c in children[i]:
                    place(c)
                x[i] = np.mean([x[c] for c in children[i]])

        place(0)
        return np.column_stack([x, -1.3 * self.depths + 0.0]), children

    def plot(self, *, ax=None):
        """Draw the tree.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : TreeDisplay
            ``self``, with ``ax_``, ``figure_`` and ``positions_`` set.
        """
        plt = _import_pyplot("TreeDisplay")
        from matplotlib.patches import Patch, Wedge

        pos, children = self._layout()
        n_leaves = sum(1 for c in children if not c)
        if ax is None:
            _, ax = plt.subplots(
                figsize=(max(4.0, 1.6 * n_leaves + 2.0), 1.8 + 1.9 * self.depths.max())
            )
        colours = _class_colors(len(self.class_names))
        root_n = max(int(self.n_samples[0]), 1)
        for i, kids in enumerate(children):
            for c in kids:
                ax.plot(*zip(pos[i], pos[c]), color="0.6", lw=1, zorder=1)
        for i in range(len(self.parents)):
            r = 0.12 + 0.33 * math.sqrt(self.n_samples[i] / root_n)
            counts = self.class_counts[i]
            total = counts.sum()
            start = 90.0
            for k, cnt in enumerate(counts):
                if cnt <= 0:
                    continue
                sweep = 360.0 * cnt / total
                ax.add_patch(Wedge(pos[i], r, start, start + sweep,
                                   facecolor=colours[k], edgecolor="white", lw=0.5,
                                   zorder=2))
                start += sweep
            text = f"node {i}\nn={int(self.n_samples[i])}"
            if not children[i] and i in self.leaf_accuracy:
                acc = self.leaf_accuracy[i]
                if np.isfinite(acc):
                    text += f"\nacc {acc:.2f}"
            ax.text(pos[i][0], pos[i][1] - r - 0.05, text, ha="center", va="top",
                    fontsize=7, zorder=3)
        ax.set_xlim(pos[:, 0].min() - 0.7, pos[:, 0].max() + 0.7)
        ax.set_ylim(pos[:, 1].min() - 1.0, 0.6)
        ax.set_aspect("equal")
        ax.axis("off")
        handles = [Patch(color=colours[k], label=name)
                   for k, name in enumerate(self.class_names)]
        ax.legend(handles=handles, title="class", loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=7, title_fontsize=8, frameon=False)
        ax.set_title("Tree: node size ~ training samples, colours = class mix")
        self.positions_ = pos
        self.ax_ = ax
        self.figure_ = ax.figure
        return self


class AttributionDisplay:
    """Routing attributions of samples, as heat overlays on images or as bars.

    Row ``i`` is a sample; column ``j`` an inner node on its path (or the
    node asked for). Image rows show the sample, then each attribution map
    overlaid on it; tabular rows show bars of the largest attributions.

    Parameters
    ----------
    attributions : ndarray of shape (n_samples, n_columns, n_features)
        NaN where a sample has no column (a path shorter than the deepest).
    titles : array-like of str, shape (n_samples, n_columns)
        Panel titles (empty where there is no panel).
    images : ndarray of shape (n_samples, channels, height, width) or None
        The samples as images; ``None`` draws bars.
    row_labels : list of str, default=None
        Shown beside each row.
    feature_names : list of str, default=None
        Bar labels for tabular data.

    Attributes
    ----------
    ax_ : ndarray of matplotlib Axes, shape (n_samples, n_panels)
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> from hemoe_sk.inspection import AttributionDisplay
    >>> attr = np.random.RandomState(0).rand(2, 1, 64)
    >>> disp = AttributionDisplay(attr, [["node 0"], ["node 0"]],
    ...                           images=np.ones((2, 1, 8, 8))).plot()
    >>> disp.ax_.shape
    (2, 2)
    """

    def __init__(self, attributions, titles, *, images=None, row_labels=None,
                 feature_names=None):
        self.attributions = np.asarray(attributions, dtype=np.float64)
        self.titles = np.asarray(titles, dtype=object)
        self.images = None if images is None else np.asarray(images, dtype=np.float64)
        self.row_labels = row_labels
        self.feature_names = feature_names

    @classmethod
    def from_estimator(cls, estimator, X, *, node=None, image_shape=None,
                       feature_names=None, row_labels=None, ax=None, **kwargs):
        """Attributions of the samples ``X`` at the nodes on their paths.

        Parameters
        ----------
        estimator : HierarchicalEmbeddingMoEClassifier or Pipeline
        X : array-like of shape (n_samples, n_features)
            A few samples (one figure row each).
        node : int or None, default=None
            ``None``: every inner node on each sample's own (hard) path, one
            column per depth. An int: that node only.
        image_shape : tuple (channels, height, width) or None, default=None
            How to show a row as an image; ``None`` takes the root
            embedder's ``image_shape`` if it has one, else draws bars.
        feature_names : list of str, default=None
        row_labels : list of str, default=None
        ax : ndarray of matplotlib Axes or None, default=None
            Shape ``(n_samples, n_panels)``.
        **kwargs
            Passed to :func:`route_attributions` (``method``, ``output``,
            ``n_steps``, ``baseline``).

        Returns
        -------
        display : AttributionDisplay
        """
        clf, Xv = _resolve(estimator, X)
        Ximg = np.asarray(X, dtype=np.float64)
        n = len(Xv)
        if node is None:
            records = explain_routes(clf, Xv)
            columns = [[s["node"] for s in r["steps"]] for r in records]
        else:
            _inner_node(clf, node)
            columns = [[int(node)] for _ in range(n)]
        n_cols = max((len(c) for c in columns), default=0)
        if n_cols == 0:
            raise ValueError(
                "The tree is a single leaf: no sample is routed, so there is no "
                "routing attribution to show."
            )
        attr = np.full((n, n_cols, Xv.shape[1]), np.nan)
        titles = np.full((n, n_cols), "", dtype=object)
        for node_id in sorted({v for c in columns for v in c}):
            pairs = [(i, j) for i, c in enumerate(columns) for j, v in enumerate(c)
                     if v == node_id]
            rows = np.array([i for i, _ in pairs])
            values = route_attributions(clf, Xv[rows], node=node_id, **kwargs)
            target = clf.tree_.nodes[node_id].router.predict(
                embed(clf.tree_.nodes[node_id].embedder, Xv[rows])
            )
            for (i, j), a, t in zip(pairs, values, target):
                attr[i, j] = a
                child = clf.tree_.nodes[node_id].children[int(t)]
                titles[i, j] = f"node {node_id} -> {child}"
        shape = image_shape
        if shape is None:
            shape = _image_shape(_module_of(clf.tree_.nodes[0].embedder))
        images = None
        if shape is not None:
            shape = tuple(int(s) for s in shape)
            if math.prod(shape) != Xv.shape[1]:
                raise ValueError(
                    f"image_shape={shape} does not match the {Xv.shape[1]} features."
                )
            images = Ximg.reshape(n, *shape)
        display = cls(attr, titles, images=images, row_labels=row_labels,
                      feature_names=feature_names)
        return display.plot(ax=ax)

    def plot(self, *, ax=None, cmap="jet", alpha=0.5, max_bars=10):
        """Draw the panels.

        Parameters
        ----------
        ax : ndarray of matplotlib Axes or None, default=None
            Shape ``(n_samples, n_panels)`` (with images, the first column
            shows the samples).
        cmap : str, default="jet"
            Colour map of the attribution overlay (each map scaled to its
            largest absolute value; values below 5% of it are not drawn).
        alpha : float, default=0.5
            Opacity of the overlay.
        max_bars : int, default=10
            Features shown per tabular panel (largest absolute attribution).

        Returns
        -------
        display : AttributionDisplay
            ``self``, with ``ax_`` and ``figure_`` set.
        """
        plt = _import_pyplot("AttributionDisplay")
        n, n_cols, n_features = self.attributions.shape
        with_images = self.images is not None
        n_panels = n_cols + (1 if with_images else 0)
        if ax is None:
            size = 1.9 if with_images else 3.2
            fig, ax = plt.subplots(n, n_panels, figsize=(size * n_panels, 2.0 * n),
                                   squeeze=False)
        ax = np.asarray(ax, dtype=object).reshape(n, n_panels)
        for i in range(n):
            offset = 0
            if with_images:
                img = self._as_picture(self.images[i])
                ax[i, 0].imshow(img, cmap="gray" if img.ndim == 2 else None)
                ax[i, 0].set_title("sample" if self.row_labels is None
                                   else str(self.row_labels[i]), fontsize=8)
                ax[i, 0].axis("off")
                offset = 1
            for j in range(n_cols):
                a = ax[i, j + offset]
                values = self.attributions[i, j]
                if np.isnan(values).all():
                    a.axis("off")
                    continue
                if with_images:
                    c, h, w = self.images[i].shape
                    heat = np.abs(values.reshape(c, h, w)).mean(axis=0)
                    a.imshow(self._as_picture(self.images[i]), cmap="gray")
                    top = heat.max()
                    heat = heat / top if top > 0 else heat
                    # Pixels with (almost) no attribution stay see-through.
                    a.imshow(np.ma.masked_less(heat, 0.05), cmap=cmap, alpha=alpha,
                             vmin=0.0, vmax=1.0)
                    a.axis("off")
                else:
                    order = np.argsort(-np.abs(values), kind="stable")[:max_bars][::-1]
                    names = (self.feature_names if self.feature_names is not None
                             else [f"x{k}" for k in range(n_features)])
                    a.barh(range(len(order)), values[order],
                           color=["tab:red" if v > 0 else "tab:blue"
                                  for v in values[order]])
                    a.set_yticks(range(len(order)))
                    a.set_yticklabels([str(names[k]) for k in order], fontsize=7)
                    a.axvline(0.0, color="0.5", lw=0.8)
                a.set_title(str(self.titles[i, j]), fontsize=8)
        self.ax_ = ax
        self.figure_ = ax[0, 0].figure
        return self

    @staticmethod
    def _as_picture(image):
        """``(C, H, W)`` -> grey ``(H, W)`` or RGB ``(H, W, 3)`` in [0, 1]."""
        image = np.asarray(image, dtype=np.float64)
        pic = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
        lo, hi = pic.min(), pic.max()
        return (pic - lo) / (hi - lo) if hi > lo else np.zeros_like(pic)
