"""Displays in scikit-learn's style (``from_estimator``, ``plot``, ``ax_``,
``figure_``): where labels are routed (:class:`RoutingDisplay`), the tree
(:class:`TreeDisplay`) and routing attributions (:class:`AttributionDisplay`).

matplotlib is optional: imported when a display is drawn, with an error
naming the extra to install.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.utils.multiclass import type_of_target

from .._docstrings import fill_doc
from ..nn.inference import embed, module_of
from ._attributions import _image_shape, route_attributions
from ._common import check_y, import_pyplot, inner_node, is_classifier_tree, resolve
from ._routes import walk_routes

__all__ = ["AttributionDisplay", "RoutingDisplay", "TreeDisplay"]


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
        classify = is_classifier_tree(est)
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
        estimator : HierarchicalEmbeddingMoEClassifier, \
                HierarchicalEmbeddingMoERegressor or Pipeline
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
        est, Xv = resolve(estimator, X)
        tree = est.tree_
        Ximg = np.asarray(X, dtype=np.float64)
        n = len(Xv)
        if node is None:
            steps, _, _ = walk_routes(tree, Xv)
            columns = [[node_id for node_id, _, _ in path] for path in steps]
        else:
            inner_node(tree, node)
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
            values = route_attributions(est, Xv[rows], node=node_id, **kwargs)
            target = tree.nodes[node_id].router.predict(
                embed(tree.nodes[node_id].embedder, Xv[rows])
            )
            for (i, j), a, t in zip(pairs, values, target):
                attr[i, j] = a
                child = tree.nodes[node_id].children[int(t)]
                titles[i, j] = f"node {node_id} -> {child}"
        shape = image_shape
        if shape is None:
            shape = _image_shape(module_of(tree.nodes[0].embedder))
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
        plt = import_pyplot("AttributionDisplay")
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
