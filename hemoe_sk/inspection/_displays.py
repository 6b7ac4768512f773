"""Displays in scikit-learn's style (``from_estimator``, ``plot``, ``ax_``,
``figure_``): where labels are routed (:class:`RoutingDisplay`) and the tree
(:class:`TreeDisplay`); :class:`AttributionDisplay` is in
``_attribution_display``.

matplotlib is optional: imported when a display is drawn, with an error
naming the extra to install.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.utils.multiclass import type_of_target

from .._docstrings import fill_doc
from ._common import check_y, has_classes, import_pyplot, resolve

__all__ = ["RoutingDisplay", "TreeDisplay"]


def _class_colors(n):
    plt = import_pyplot("The display")
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
        estimator : fitted estimator or Pipeline
            One with a ``tree_`` (the hierarchical classifier or
            regressor: leaves are ``apply(X)``) or ``gate_weights`` (a flat
            mixture: the expert with the largest gate weight).
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels of the samples (the heatmap's rows). For a regressor,
            bin the targets first (continuous ``y`` is a ValueError).
        %(heatmap_parameters)s

        Returns
        -------
        display : RoutingDisplay
        """
        est, Xv = resolve(estimator, X, needs=("tree", "gates"))
        if hasattr(est, "gate_weights"):
            leaf, name = est.gate_weights(Xv).argmax(axis=1), "expert (largest gate)"
        else:
            leaf, name = est.tree_.apply(Xv), "leaf"
        y = check_y(y, len(Xv))
        if type_of_target(y) in ("continuous", "continuous-multioutput"):
            raise ValueError(
                "RoutingDisplay counts the samples of each label at each leaf, and "
                "y holds continuous values (a regressor's targets?). Pass labels: "
                "bin the targets first, e.g. "
                "np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))."
            )
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
        plt = import_pyplot("RoutingDisplay")
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
    split by their classes (a plain disc per node for a regressor's tree).

    Parameters
    ----------
    parents : array-like of int
        Parent id of every node (``-1`` for the root), in node-id order.
    depths : array-like of int
    n_samples : array-like of int
        Training samples of every node.
    class_counts : ndarray of shape (n_nodes, n_classes) or None, default=None
        Training samples of every node by class; ``None`` (a regressor's
        tree) draws every node as one disc.
    class_names : array-like of shape (n_classes,) or None, default=None
        Legend of the classes (``None`` with ``class_counts=None``).
    leaf_accuracy : dict, default=None
        ``{leaf id: training score}``, shown under the leaves.
    score_name : str, default="acc"
        How the leaves' score is labelled (``"R^2"`` for a regressor).

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

    def __init__(self, parents, depths, n_samples, class_counts=None, class_names=None,
                 *, leaf_accuracy=None, score_name="acc"):
        self.parents = np.asarray(parents, dtype=int)
        self.depths = np.asarray(depths, dtype=int)
        self.n_samples = np.asarray(n_samples)
        self.class_counts = None if class_counts is None else np.asarray(class_counts)
        self.class_names = None if class_names is None else list(class_names)
        self.leaf_accuracy = dict(leaf_accuracy or {})
        self.score_name = score_name

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Display the tree of a fitted estimator (or a pipeline ending in one).

        Parameters
        ----------
        estimator : HierarchicalEmbeddingMoEClassifier, \
                HierarchicalEmbeddingMoERegressor or Pipeline
            A classifier's nodes are pies of their classes; a regressor's,
            which have no classes, plain discs, and its leaves show their
            training R^2.
        ax : matplotlib Axes or None, default=None

        Returns
        -------
        display : TreeDisplay
        """
        est, _ = resolve(estimator, None)
        nodes = est.tree_.nodes
        classify = has_classes(est)
        display = cls(
            [n.parent for n in nodes],
            [n.depth for n in nodes],
            [n.n_samples for n in nodes],
            np.stack([n.class_counts for n in nodes]) if classify else None,
            [str(c) for c in est.classes_] if classify else None,
            leaf_accuracy={n.node_id: n.train_accuracy for n in nodes if n.is_leaf},
            score_name="acc" if classify else "R^2",
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
        plt = import_pyplot("TreeDisplay")
        from matplotlib.patches import Patch, Wedge

        pos, children = self._layout()
        n_leaves = sum(1 for c in children if not c)
        if ax is None:
            _, ax = plt.subplots(
                figsize=(max(4.0, 1.6 * n_leaves + 2.0), 1.8 + 1.9 * self.depths.max())
            )
        if self.class_counts is None:
            counts_by_node = self.n_samples[:, None]
            colours = ["tab:gray"]
        else:
            counts_by_node = self.class_counts
            colours = _class_colors(len(self.class_names))
        root_n = max(int(self.n_samples[0]), 1)
        for i, kids in enumerate(children):
            for c in kids:
                ax.plot(*zip(pos[i], pos[c]), color="0.6", lw=1, zorder=1)
        for i in range(len(self.parents)):
            r = 0.12 + 0.33 * math.sqrt(self.n_samples[i] / root_n)
            counts = counts_by_node[i]
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
                    text += f"\n{self.score_name} {acc:.2f}"
            ax.text(pos[i][0], pos[i][1] - r - 0.05, text, ha="center", va="top",
                    fontsize=7, zorder=3)
        ax.set_xlim(pos[:, 0].min() - 0.7, pos[:, 0].max() + 0.7)
        ax.set_ylim(pos[:, 1].min() - 1.0, 0.6)
        ax.set_aspect("equal")
        ax.axis("off")
        if self.class_names is None:
            ax.set_title("Tree: node size ~ training samples")
        else:
            handles = [Patch(color=colours[k], label=name)
                       for k, name in enumerate(self.class_names)]
            ax.legend(handles=handles, title="class", loc="upper left",
                      bbox_to_anchor=(1.0, 1.0), fontsize=7, title_fontsize=8,
                      frameon=False)
            ax.set_title("Tree: node size ~ training samples, colours = class mix")
        self.positions_ = pos
        self.ax_ = ax
        self.figure_ = ax.figure
        return self
