"""Route records: the path of every sample root to leaf, as records, text
and CSV.

The records come from the tree's own walk (:meth:`HierarchyTree.walk
<hemoe_sk.tree.HierarchyTree.walk>`, the one that ``predict``, ``apply`` and
``decision_path`` use), with a visitor that notes each router's
probabilities and choice; nothing here routes a second way.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._docstrings import fill_doc
from ._common import (
    check_y,
    final_estimator,
    has_classes,
    import_pandas,
    labels,
    resolve,
    write_csv,
)
from ._gates import gate_table

__all__ = ["explain_routes", "export_routing", "format_route"]


def walk_routes(tree, X):
    """Hard-route ``X`` down ``tree`` with its own walk, recording every
    decision.

    Returns ``(steps, leaf, leaf_out)``: ``steps[i]`` is the list of
    ``(node_id, routing probabilities over the node's children, chosen
    child position)`` along sample ``i``'s path, root first; ``leaf`` the
    leaf ids (``tree.apply``); ``leaf_out`` the leaf experts' outputs (class
    probabilities, or a regressor's standardised predictions).
    """
    n = len(X)
    steps = [[] for _ in range(n)]
    leaf = np.empty(n, dtype=np.intp)
    leaf_out = np.zeros((n, tree.n_classes))

    def visit_split(node, rows, proba, choice):
        for r, p, c in zip(rows, proba, choice):
            steps[r].append((node.node_id, p, int(c)))

    def visit_leaf(node, rows, weights, E):
        leaf[rows] = node.node_id
        leaf_out[rows] = node.classifier.predict_proba(X, rows, E)

    tree.walk(X, False, visit_leaf, visit_split=visit_split)
    return steps, leaf, leaf_out


def _value(v):
    """A regressor's output for one sample: a float, or a list of floats
    for several outputs."""
    v = np.asarray(v, dtype=np.float64)
    return float(v) if v.ndim == 0 else v.tolist()


@fill_doc
def explain_routes(estimator, X, *, top_k=3, as_frame=False):
    """The route of every sample from the root to its leaf.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier, \
            HierarchicalEmbeddingMoERegressor or Pipeline
        Fitted (any estimator with a fitted ``tree_``); a pipeline's first
        steps transform ``X``.
    X : array-like of shape (n_samples, n_features)
        Samples to explain.
    top_k : int, default=3
        Number of the leaf's most probable classes to report (classifier).
    as_frame : bool, default=False
        Return a :class:`pandas.DataFrame` (one row per sample, the columns
        of :func:`export_routing` less ``label``/``target``) instead of
        records.

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
          ``child_n_samples`` (training samples of the child) and, for a
          classifier, ``child_class_counts`` (those samples by class, zero
          counts left out);
        - ``path_proba``: product of the ``proba`` along the path (the
          leaf's weight under soft routing);
        - for a classifier, ``leaf_classes`` and ``leaf_proba``: the leaf
          expert's ``top_k`` classes and their probabilities, and
          ``prediction`` and ``prediction_proba``: the estimator's own
          prediction (with its ``routing``) and its probability;
        - for a regressor, ``leaf_prediction``: the leaf expert's prediction
          (on the scale of ``y``; a list for several outputs), and
          ``prediction``: the estimator's ``predict`` (with its
          ``routing``; equal to ``leaf_prediction`` under hard routing).

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
    est, X = resolve(estimator, X)
    tree = est.tree_
    steps, leaf, leaf_out = walk_routes(tree, X)
    classify = has_classes(est)
    if classify:
        classes = est.classes_
        model_proba = est.predict_proba(X)
        predicted = model_proba.argmax(axis=1)
        k = min(int(top_k), tree.n_classes)
    else:
        prediction = np.asarray(est.predict(X))
        leaf_pred = leaf_out * est.y_scale_ + est.y_mean_
        if prediction.ndim == 1:
            leaf_pred = leaf_pred[:, 0]
    records = []
    for i in range(len(X)):
        rec_steps, path, path_proba = [], [], 1.0
        for node_id, share, c in steps[i]:
            node = tree.nodes[node_id]
            child = tree.nodes[node.children[c]]
            step = {
                "node": node_id,
                "depth": node.depth,
                "children": list(node.children),
                "routing_proba": [float(p) for p in share],
                "child": child.node_id,
                "proba": float(share[c]),
                "child_n_samples": int(child.n_samples),
            }
            if classify:
                counts = child.class_counts
                nonzero = np.flatnonzero(counts)
                step["child_class_counts"] = dict(
                    zip(labels(classes, nonzero), counts[nonzero].tolist())
                )
            rec_steps.append(step)
            path.append(node_id)
            path_proba *= float(share[c])
        path.append(int(leaf[i]))
        record = {"sample": i, "leaf": int(leaf[i]), "path": path,
                  "steps": rec_steps, "path_proba": path_proba}
        if classify:
            order = np.argsort(-leaf_out[i], kind="stable")[:k]
            record.update({
                "leaf_classes": labels(classes, order),
                "leaf_proba": [float(p) for p in leaf_out[i, order]],
                "prediction": labels(classes, [predicted[i]])[0],
                "prediction_proba": float(model_proba[i, predicted[i]]),
            })
        else:
            record.update({
                "leaf_prediction": _value(leaf_pred[i]),
                "prediction": _value(prediction[i]),
            })
        records.append(record)
    if as_frame:
        pd = import_pandas()
        header, rows = _route_table(records, tree.max_depth)
        return pd.DataFrame(rows, columns=header)
    return records


def _route_table(records, max_depth):
    """Header and rows of the routing table (CSV and DataFrame)."""
    levels = [f"p_depth_{d}" for d in range(max_depth)]
    header = ["sample", "leaf", "path", *levels, "path_proba"]
    regression = bool(records) and "leaf_prediction" in records[0]
    n_out = 1
    if regression:
        n_out = len(np.atleast_1d(records[0]["prediction"]))
        names = ["leaf_prediction", "predicted"]
        header += (names if n_out == 1
                   else [f"{name}_{j}" for name in names for j in range(n_out)])
    else:
        header += ["leaf_class", "leaf_class_proba", "predicted", "predicted_proba"]
    rows = []
    for r in records:
        ps = [s["proba"] for s in r["steps"]]
        ps += [float("nan")] * (max_depth - len(ps))
        row = [r["sample"], r["leaf"], ">".join(str(p) for p in r["path"]), *ps,
               r["path_proba"]]
        if regression:
            row += [*np.atleast_1d(r["leaf_prediction"]).tolist(),
                    *np.atleast_1d(r["prediction"]).tolist()]
        else:
            row += [r["leaf_classes"][0], r["leaf_proba"][0], r["prediction"],
                    r["prediction_proba"]]
        rows.append(row)
    return header, rows


def _number(v, f):
    if isinstance(v, list):
        return "[" + ", ".join(f"{x:{f}}" for x in v) + "]"
    return f"{v:{f}}"


def format_route(record, *, decimals=3):
    """One record of :func:`explain_routes` as readable text.

    Parameters
    ----------
    record : dict
        An element of ``explain_routes(estimator, X)``, of a classifier or a
        regressor.
    decimals : int, default=3
        Digits of the probabilities (and of a regressor's predictions).

    Returns
    -------
    text : str
        A line for the sample and its prediction, then per inner node on the
        path the routing probability of every child, the child taken and its
        training samples (by class for a classifier), then the leaf's top
        classes (or its prediction, for a regressor).

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
    regression = "leaf_prediction" in record
    path = " > ".join(str(p) for p in record["path"])
    if regression:
        said = _number(record["prediction"], f)
    else:
        said = f"{record['prediction']} (p={record['prediction_proba']:{f}})"
    lines = [f"sample {record['sample']} -> leaf {record['leaf']} (path {path}), "
             f"predicted {said}"]
    for s in record["steps"]:
        shares = ", ".join(
            f"child {c}: {p:{f}}" for c, p in zip(s["children"], s["routing_proba"])
        )
        lines.append(
            f"  node {s['node']} (depth {s['depth']}): {shares} -> node {s['child']} "
            f"(p={s['proba']:{f}})"
        )
        line = f"      node {s['child']} trained on {s['child_n_samples']} samples"
        if "child_class_counts" in s:
            line += ": " + ", ".join(
                f"{k}: {v}" for k, v in s["child_class_counts"].items()
            )
        lines.append(line)
    if regression:
        top = f"predicts {_number(record['leaf_prediction'], f)}"
    else:
        top = ", ".join(
            f"{c} {p:{f}}" for c, p in zip(record["leaf_classes"], record["leaf_proba"])
        )
    lines.append(
        f"  leaf {record['leaf']}: {top} (path probability {record['path_proba']:{f}})"
    )
    return "\n".join(lines)


@fill_doc
def export_routing(estimator, X, y, path):
    """Write one CSV row per sample: label, leaf, path and routing
    probabilities, prediction.

    Parameters
    ----------
    estimator : HierarchicalEmbeddingMoEClassifier, \
            HierarchicalEmbeddingMoERegressor, MixtureOfExpertsClassifier, \
            MixtureOfExpertsRegressor or Pipeline
        Fitted; a pipeline's first steps transform ``X``.
    X : array-like of shape (n_samples, n_features)
        Samples.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs), or None
        Their true labels (targets, for a regressor); ``None`` leaves the
        ``label`` (``target``) column out.
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

    For the hierarchical regressor ``label`` is ``target`` and the last
    columns are ``leaf_prediction`` (the leaf expert's prediction) and
    ``predicted`` (the estimator's); with several outputs every target and
    prediction column is numbered (``target_0``, ``predicted_0``, ...).

    For a flat mixture (:class:`~hemoe_sk.MixtureOfExpertsClassifier` or
    :class:`~hemoe_sk.MixtureOfExpertsRegressor`) the gate is one level:
    ``leaf`` is the expert with the largest gate weight, ``path`` is that
    expert's id, ``p_depth_0`` its gate weight, then the prediction columns
    (``predicted`` and ``predicted_proba`` for the classifier, ``predicted``
    for the regressor) and ``gate_0`` ... (every expert's gate weight).

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
    final = final_estimator(estimator)
    if hasattr(final, "gate_weights"):
        header, rows = gate_table(estimator, X)
    else:
        records = explain_routes(estimator, X)
        header, rows = _route_table(records, final.tree_.max_depth)
    if y is None:
        return write_csv(path, header, rows)
    name = "label" if has_classes(final) else "target"
    y = np.asarray(y)
    if y.ndim == 2 and name == "target" and len(y) == len(rows):
        names = [f"{name}_{j}" for j in range(y.shape[1])]
        values = y.tolist()
    else:
        names, values = [name], [[v] for v in check_y(y, len(rows)).tolist()]
    return write_csv(path, [*names, *header],
                     [[*v, *row] for v, row in zip(values, rows)])
