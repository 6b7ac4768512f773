"""The routing attributions of a few samples, drawn: heat overlays on
images or bars for tabular data (:class:`AttributionDisplay`, in
scikit-learn's display style)."""

from __future__ import annotations

import math

import numpy as np

from ..nn.inference import embed, module_of
from ._attributions import _image_shape, route_attributions
from ._common import import_pyplot, inner_node, resolve
from ._routes import walk_routes

__all__ = ["AttributionDisplay"]


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
