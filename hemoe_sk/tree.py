"""The fitted hierarchy: nodes, routing (hard and soft), apply, decision_path,
export_text.

A :class:`Node` holds its network (``embedder``), and either a router with
children (an inner node) or a classifier (a leaf). Prediction walks the tree
in batches: at each node the rows that reached it are embedded once, routed,
and handed on as index arrays, never one sample at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import sparse

from .nn.inference import embed

__all__ = ["HierarchyTree", "Node", "TrainingRecord"]

#: Soft routing drops a sample from a subtree when its path probability is
#: below this; the dropped mass is renormalised away.
SOFT_ROUTING_EPS = 1e-6


class TrainingRecord(NamedTuple):
    """One training run of a network (or expert) that a node keeps.

    A few numbers, never the rows themselves: what the tree handed the
    network, and how long it trained.

    Attributes
    ----------
    stage : str
        What was trained, as named in messages: ``"root network (fit
        part)"``, ``"node 0 (depth 0), K=3 search, expert 1"``, ``"... final
        expert 1"``, ``"... pair expert (0, 2)"``, ``"... refit on all
        rows"`` or ``"joint refinement"``.
    n_rows : int
        Training rows the tree gave it.
    epochs : int
        Epochs it ran (0 for a constant expert, which does not train, and
        for a scikit-learn expert, which has no epochs).
    """

    stage: str
    n_rows: int
    epochs: int


@dataclass(eq=False)
class Node:
    """One node of a fitted :class:`HierarchyTree`.

    Attributes
    ----------
    node_id, depth, parent : int
        Position in the tree (``parent=-1`` for the root).
    n_samples : int
        Training rows that reached the node.
    class_counts : ndarray of shape (n_classes,)
        Their class counts (empty in a regressor's tree).
    embedder : skorch net
        Network whose embeddings this node's router (and a head expert) reads.
    classifier : expert
        The node's own classifier: used when the node is a leaf.
    router : hemoe_sk.node.Router or None
        ``None`` for a leaf.
    children : list of int
        Child node ids, one per cluster of the router.
    search : dict
        ``{"scores": {candidate: held-out weighted accuracy}, "cv_results":
        GridSearchCV.cv_results_, "min_gain": margin a split had to beat,
        "decision": hemoe_sk.node.SplitDecision of the best split against
        K=1 (None when no split was eligible)}``;
        empty when the node was not searched.
        Candidates are named ``"K=3"``, or by their clusterer parameters.
    train_accuracy : float
        Accuracy of the node's classifier on its own training rows (R^2 of
        its regressor in a regressor's tree).
    epochs : int
        Training epochs on the path from the root to this node, included.
    note : str
        Why the node was not searched or split, where that needs saying.
    pair : tuple of int
        For a cluster-pair expert (``pair_expert=True``): the two clusters of
        its parent whose ambiguous rows it takes (it is the parent's last
        child, and a leaf). Empty for every other node.
    training : list of TrainingRecord
        Every training run of the node's networks, in order: the root
        network's, or the expert this node was grown from (trained in its
        parent's search or after it), then a refit on all of the node's rows
        and the joint refinement, where those ran. A record of the fit, kept
        by ``pickle``; the safe format (:func:`hemoe_sk.save`) does not store
        it, so a loaded tree's lists are empty.
    """

    node_id: int
    depth: int
    parent: int
    n_samples: int
    class_counts: np.ndarray
    embedder: object
    classifier: object
    router: object = None
    children: list = field(default_factory=list)
    search: dict = field(default_factory=dict)
    train_accuracy: float = float("nan")
    epochs: int = 0
    note: str = ""
    pair: tuple = ()
    training: list = field(default_factory=list)

    @property
    def is_leaf(self):
        return self.router is None


class HierarchyTree:
    """A fitted tree of routers and experts.

    Parameters
    ----------
    nodes : list of Node
        Nodes in id order; ``nodes[0]`` is the root.
    n_classes : int
    """

    def __init__(self, nodes, n_classes):
        self.nodes = nodes
        self.n_classes = n_classes

    # -- shape ---------------------------------------------------------------
    @property
    def node_count(self):
        return len(self.nodes)

    @property
    def leaves(self):
        return [node.node_id for node in self.nodes if node.is_leaf]

    @property
    def n_leaves(self):
        return len(self.leaves)

    @property
    def max_depth(self):
        return max(node.depth for node in self.nodes)

    @property
    def max_path_epochs(self):
        return max(self.nodes[i].epochs for i in self.leaves)

    # -- routing -------------------------------------------------------------
    def walk(self, X, soft, visit_leaf, visit_node=None, visit_split=None):
        """Route every row of ``X`` down the tree in batches.

        The one walk of the tree: prediction, ``apply``, ``decision_path``
        and :mod:`hemoe_sk.inspection`'s route records all use it.
        ``visit_leaf(node, rows, weights, E)`` is called once per reached leaf
        with the rows that reached it, their path probabilities and their
        embeddings (``None`` when the leaf's expert does not read them);
        ``visit_node(node, rows)`` once per reached node;
        ``visit_split(node, rows, proba, choice)`` once per reached inner
        node with the router's probability of every child and the child
        hard routing takes (the router's ``predict``).
        """
        stack = [(self.nodes[0], np.arange(len(X)), np.ones(len(X)))]
        while stack:
            node, rows, weights = stack.pop()
            if visit_node is not None:
                visit_node(node, rows)
            needs_e = not node.is_leaf or node.classifier.needs_embedding
            E = embed(node.embedder, X, rows=rows) if needs_e and len(rows) else None
            if node.is_leaf:
                visit_leaf(node, rows, weights, E)
                continue
            k = len(node.children)
            split = visit_split is not None
            proba = node.router.predict_proba(E) if soft or split else None
            choice = node.router.predict(E) if not soft or split else None
            if split:
                visit_split(node, rows, proba, choice)
            if soft:
                share = proba
            else:
                share = np.zeros((len(rows), k))
                share[np.arange(len(rows)), choice] = 1.0
            for c, child in enumerate(node.children):
                w = weights * share[:, c]
                keep = w > (SOFT_ROUTING_EPS if soft else 0.0)
                if keep.any():
                    stack.append((self.nodes[child], rows[keep], w[keep]))

    def predict_proba(self, X, routing="hard"):
        """Class probabilities (columns are the tree's encoded classes).

        Hard routing takes the router's cluster at every node; soft routing
        multiplies the routing probabilities along each path and blends the
        leaves' probabilities with those weights.
        """
        proba = np.zeros((len(X), self.n_classes))

        def visit_leaf(node, rows, weights, E):
            proba[rows] += weights[:, None] * node.classifier.predict_proba(X, rows, E)

        self.walk(X, routing == "soft", visit_leaf)
        total = proba.sum(axis=1, keepdims=True)
        return proba / np.where(total > 0, total, 1.0)

    def predict_output(self, X, routing="hard"):
        """The leaves' outputs (a regressor's standardised predictions),
        taken from the reached leaf (hard routing) or averaged with the path
        probabilities as weights (soft routing)."""
        out = np.zeros((len(X), self.n_classes))
        total = np.zeros((len(X), 1))

        def visit_leaf(node, rows, weights, E):
            out[rows] += weights[:, None] * node.classifier.predict_proba(X, rows, E)
            total[rows, 0] += weights

        self.walk(X, routing == "soft", visit_leaf)
        return out / np.where(total > 0, total, 1.0)

    def apply(self, X):
        """Leaf id reached by every row under hard routing."""
        leaf = np.empty(len(X), dtype=np.intp)

        def visit_leaf(node, rows, weights, E):
            leaf[rows] = node.node_id

        self.walk(X, False, visit_leaf)
        return leaf

    def decision_path(self, X):
        """CSR indicator (n_samples, n_nodes) of the nodes each row visits."""
        visited_rows, visited_nodes = [], []

        def visit_node(node, rows):
            visited_rows.append(rows)
            visited_nodes.append(np.full(len(rows), node.node_id))

        self.walk(X, False, lambda *a: None, visit_node)
        rows = np.concatenate(visited_rows)
        cols = np.concatenate(visited_nodes)
        data = np.ones(len(rows), dtype=np.intp)
        return sparse.csr_matrix(
            (data, (rows, cols)), shape=(len(X), self.node_count), dtype=np.intp
        )

    # -- reading -------------------------------------------------------------
    def export_text(self, class_names=None, decimals=3, score_name="accuracy"):
        """A readable picture of the tree, one line per node.

        ``score_name`` names the search's and the leaves' score ("R^2" for a
        regressor, whose nodes have no class counts)."""
        names = (
            [str(c) for c in class_names]
            if class_names is not None
            else [str(i) for i in range(self.n_classes)]
        )
        lines = []

        def fmt_counts(counts):
            return "{" + ", ".join(
                f"{names[i]}: {int(c)}" for i, c in enumerate(counts) if c
            ) + "}"

        def visit(node_id, prefix):
            node = self.nodes[node_id]
            head = (
                f"{prefix}node {node.node_id} (depth {node.depth}, "
                f"n={node.n_samples})"
            )
            if len(node.class_counts):
                head += f" classes={fmt_counts(node.class_counts)}"
            if node.pair:
                head += f" [pair expert of clusters {node.pair}]"
            lines.append(head)
            pad = prefix.replace("|--- ", "|    ") + "    "
            if node.search:
                scores = ", ".join(
                    f"{name}: {s:.{decimals}f}" if np.isfinite(s) else f"{name}: n/a"
                    for name, s in node.search["scores"].items()
                )
                chosen = node.router.n_clusters - 1 if any(
                    self.nodes[c].pair for c in node.children
                ) else len(node.children) or 1
                lines.append(
                    f"{pad}search (held-out weighted {score_name}): {scores} -> "
                    f"K={chosen}"
                )
                decision = node.search.get("decision")
                if decision is not None:
                    verdict = "kept" if len(node.children) > 1 else "not kept"
                    test = (
                        f"p={decision.p_value:.{decimals}f} ({decision.test})"
                        if decision.p_value is not None
                        else f"margin {decision.min_gain:.{decimals}f}"
                    )
                    lines.append(
                        f"{pad}best split vs K=1 on {decision.n} held-out rows: "
                        f"gain {decision.gain:+.{decimals}f} ({decision.wins} won, "
                        f"{decision.losses} lost), {test} -> {verdict}"
                    )
                elif node.search.get("min_gain"):
                    lines.append(
                        f"{pad}(a split is kept only if it beats K=1 by more than "
                        f"{node.search['min_gain']:.{decimals}f})"
                    )
            pair = node.search.get("pair") if node.search else None
            if pair is not None:
                d = pair["decision"]
                test = f"p={d.p_value:.{decimals}f} ({d.test})" if d.p_value is not None \
                    else f"margin {d.min_gain:.{decimals}f}"
                lines.append(
                    f"{pad}pair expert for clusters {pair['pair']} "
                    f"({pair['n_ambiguous']} ambiguous fit rows) vs the plain split on "
                    f"{d.n} held-out rows: gain {d.gain:+.{decimals}f}, {test} -> "
                    f"{'kept' if d.keep else 'not kept'}"
                )
            if node.note:
                lines.append(f"{pad}{node.note}")
            if node.is_leaf:
                lines.append(
                    f"{pad}leaf: train {score_name} {node.train_accuracy:.{decimals}f}"
                )
            for child in node.children:
                visit(child, pad[:-4] + "|--- ")

        visit(0, "")
        return "\n".join(lines)
