"""One validation pass over a decoded model, before :func:`load` returns it.

The reader checks each object as it builds it; this pass checks how they fit
together, so that a loaded model cannot loop, index out of range or
mispredict silently at ``predict``:

* the root is an estimator of the codec table or a ``Pipeline`` of them;
* a hierarchy is a tree: node ids are positions, every child id in range,
  each node reached once from the root (no cycle, no shared subtree), depths
  and parents consistent, a leaf has no children;
* a router's width equals its child count (and its clusterer's number of
  clusters, when it knows one); a pair router's pair is two of its clusters;
* output widths agree: the tree's ``n_classes`` is ``len(classes_)`` (or
  ``n_outputs_``), every net built with ``module__n_classes`` says the same,
  constant and scikit-learn experts too;
* target scales are finite and positive, class labels unique.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._codecs import codec_of
from ._errors import fail

__all__ = ["validate"]

_HIERARCHIES = ("HierarchicalEmbeddingMoEClassifier", "HierarchicalEmbeddingMoERegressor")
_NETS = ("net", "expert_net")


def _name(obj):
    codec = codec_of(type(obj))
    return None if codec is None else codec.name


def _build(obj):
    codec = codec_of(type(obj))
    return None if codec is None else codec.build


def _int(value, lo=0, hi=None):
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= lo
        and (hi is None or value <= hi)
    )


class _Validator:
    def __init__(self, path):
        self.path = path

    def fail(self, why):
        return fail(self.path, why)

    def root(self, est):
        name = _name(est)
        if name == "sklearn.pipeline.Pipeline":
            steps = est.steps
            if not (isinstance(steps, list) and steps):
                raise self.fail("the pipeline has no steps.")
            names = set()
            for step in steps:
                if not (isinstance(step, tuple) and len(step) == 2):
                    raise self.fail("a pipeline step is not a (name, estimator) pair.")
                label, part = step
                if not isinstance(label, str) or label in names:
                    raise self.fail("pipeline step names must be unique strings.")
                names.add(label)
                if part not in (None, "passthrough") and _build(part) not in (
                    "estimator",
                    "sklearn",
                ):
                    raise self.fail(f"the pipeline step {label!r} is not an estimator.")
                self.estimator(part)
            return
        if _build(est) not in ("estimator", "sklearn", "refit"):
            raise self.fail(
                f"its root is a {type(est).__name__}, not an estimator or a Pipeline."
            )
        self.estimator(est)

    # -- estimators ------------------------------------------------------
    def estimator(self, est):
        name = _name(est)
        state = vars(est) if hasattr(est, "__dict__") else {}
        width = None
        if "classes_" in state:
            classes = state["classes_"]
            if classes.ndim != 1 or len(classes) < 1:
                raise self.fail(f"{name}.classes_ is not a 1-D array of labels.")
            if len(np.unique(classes)) != len(classes):
                raise self.fail(f"{name}.classes_ holds duplicate labels.")
            width = len(classes)
        if "n_outputs_" in state:
            if not _int(state["n_outputs_"], 1, 10**6):
                raise self.fail(f"{name}.n_outputs_ is not a small positive integer.")
            width = state["n_outputs_"]
            for attr in ("y_mean_", "y_scale_"):
                arr = state.get(attr)
                if arr is None:
                    continue
                if arr.shape != (width,) or arr.dtype.kind != "f":
                    raise self.fail(f"{name}.{attr} does not have n_outputs_ values.")
                if not np.isfinite(arr).all():
                    raise self.fail(f"{name}.{attr} is not finite.")
            scale = state.get("y_scale_")
            if scale is not None and not (scale > 0).all():
                raise self.fail(f"{name}.y_scale_ is not positive.")
        for attr in ("net_", "embedder_", "autoencoder_", "base_net_"):
            if attr in state and _build(state[attr]) not in _NETS:
                raise self.fail(f"{name}.{attr} is not a net.")
        if "estimators_" in state:
            parts = state["estimators_"]
            if not isinstance(parts, list) or any(_build(p) not in _NETS for p in parts):
                raise self.fail(f"{name}.estimators_ is not a list of nets.")
            for net in parts:
                self.net_width(net, width, f"{name}.estimators_")
        if "net_" in state:
            self.net_width(state["net_"], width, f"{name}.net_")
        n_features = state.get("n_features_in_")
        if n_features is not None and not _int(n_features, 1, 2**31):
            raise self.fail(f"{name}.n_features_in_ is {n_features!r:.40}.")
        for attr in ("net_", "embedder_", "base_net_"):
            net = state.get(attr)
            while _build(net) == "expert_net":
                net = net.parent_net_
            wants = getattr(net, "get_params", dict)(deep=False).get("module__n_features")
            if n_features is not None and wants is not None and wants != n_features:
                raise self.fail(
                    f"{name}.{attr} reads {wants} features where the model has "
                    f"{n_features}."
                )
        for attr in ("reconstruction_scale_", "noise_variance_"):
            value = state.get(attr)
            if value is not None and not np.isfinite(np.asarray(value, float)).all():
                raise self.fail(f"{name}.{attr} is not finite.")
        centers = state.get("cluster_centers_")
        if centers is not None and (
            centers.ndim != 2 or not np.isfinite(centers).all()
        ):
            raise self.fail(f"{name}.cluster_centers_ is not a finite 2-D array.")
        if name in _HIERARCHIES and "tree_" in state:
            self.tree(state["tree_"], width, name)

    def net_width(self, net, width, where):
        """A net's output width (``module__n_classes``) must be ``width``."""
        if width is None:
            return
        while _build(net) == "expert_net":
            net = net.parent_net_
        n = getattr(net, "get_params", dict)(deep=False).get("module__n_classes")
        if n is not None and n != width:
            raise self.fail(f"{where} has {n} outputs where the model has {width}.")

    # -- the hierarchy -------------------------------------------------------
    def tree(self, tree, width, where):
        if _name(tree) != "HierarchyTree":
            raise self.fail(f"{where}.tree_ is not a HierarchyTree.")
        nodes = tree.nodes
        if not isinstance(nodes, list) or not nodes:
            raise self.fail("the tree has no nodes.")
        if any(_name(node) != "Node" for node in nodes):
            raise self.fail("the tree holds something other than nodes.")
        if not _int(tree.n_classes, 1) or (width is not None and tree.n_classes != width):
            raise self.fail(
                f"the tree has n_classes={tree.n_classes!r:.40} where the model has "
                f"{width} outputs."
            )
        n = len(nodes)
        for i, node in enumerate(nodes):
            if node.node_id != i:
                raise self.fail(f"node {i} says it is node {node.node_id!r:.40}.")
        root = nodes[0]
        if root.parent != -1 or root.depth != 0:
            raise self.fail("the root node has a parent or a depth.")
        seen = {0}
        stack = [0]
        while stack:
            node = nodes[stack.pop()]
            self.node(node, tree.n_classes)
            for child in node.children:
                if not _int(child, 1, n - 1):
                    raise self.fail(
                        f"node {node.node_id} has child {child!r:.40}, not a node id."
                    )
                if child in seen:
                    raise self.fail(
                        f"node {child} is reached twice (a cycle or a shared subtree)."
                    )
                if nodes[child].parent != node.node_id or nodes[child].depth != (
                    node.depth + 1
                ):
                    raise self.fail(f"node {child}'s parent or depth is inconsistent.")
                seen.add(child)
                stack.append(child)
        if len(seen) != n:
            raise self.fail(f"{n - len(seen)} nodes are not reachable from the root.")

    def node(self, node, n_classes):
        i = node.node_id
        if not isinstance(node.children, list):
            raise self.fail(f"node {i}'s children are not a list.")
        if _build(node.embedder) not in _NETS:
            raise self.fail(f"node {i}'s embedder is not a net.")
        self.net_width(node.embedder, n_classes, f"node {i}'s embedder")
        counts = node.class_counts
        if counts.ndim != 1 or len(counts) not in (0, n_classes):
            raise self.fail(f"node {i}'s class counts do not match the classes.")
        self.expert(node.classifier, n_classes, i)
        if node.router is None:
            if node.children:
                raise self.fail(f"node {i} has children but no router.")
            return
        width = self.router(node.router, i)
        if len(node.children) != width:
            raise self.fail(
                f"node {i}'s router has {width} routes for {len(node.children)} children."
            )

    def router(self, router, i):
        name = _name(router)
        if name == "PairRouter":
            inner = router.router
            if _name(inner) != "Router":
                raise self.fail(f"node {i}'s pair router wraps no router.")
            k = self.router(inner, i)
            a, b = router.pair
            if not (0 <= a < b < k) or not np.isfinite(router.margin):
                raise self.fail(f"node {i}'s pair router names clusters outside 0..{k - 1}.")
            return k + 1
        if name != "Router":
            raise self.fail(f"node {i}'s router is a {type(router).__name__}.")
        k = router.n_clusters
        if not _int(k, 1, 10**6):
            raise self.fail(f"node {i}'s router has {k!r:.40} clusters.")
        clusterer = router.clusterer
        if _build(clusterer) not in ("estimator", "sklearn"):
            raise self.fail(f"node {i}'s clusterer is not an estimator.")
        state = vars(clusterer)
        known = state.get("n_clusters_")
        for attr in ("cluster_centers_", "means_"):
            if known is None and isinstance(state.get(attr), np.ndarray):
                known = state[attr].shape[0]
        if known is not None and known != k:
            raise self.fail(
                f"node {i}'s router routes to {k} clusters but its clusterer has "
                f"{known!r:.40}."
            )
        self.estimator(clusterer)
        if router.reducer is not None and _build(router.reducer) != "sklearn":
            raise self.fail(f"node {i}'s reducer is not a scikit-learn transformer.")
        return k

    def expert(self, expert, n_classes, i):
        name = _name(expert)
        if name == "ConstantExpert":
            if expert.n_classes != n_classes or not _int(
                expert.class_index, 0, n_classes - 1
            ):
                raise self.fail(f"node {i}'s constant expert does not fit the classes.")
        elif name == "NetExpert":
            if _build(expert.net) not in _NETS:
                raise self.fail(f"node {i}'s expert holds no net.")
            self.net_width(expert.net, n_classes, f"node {i}'s expert")
        elif name == "HeadExpert":
            if _build(expert.head) not in _NETS:
                raise self.fail(f"node {i}'s head expert holds no net.")
            self.net_width(expert.head, n_classes, f"node {i}'s head")
        elif name == "SklearnExpert":
            if expert.n_classes != n_classes or _build(expert.estimator) != "sklearn":
                raise self.fail(f"node {i}'s scikit-learn expert does not fit the tree.")
            labels = getattr(expert.estimator, "classes_", None)
            if labels is not None and (
                np.asarray(labels).dtype.kind not in "iu"
                or len(labels) > n_classes
                or (len(labels) and not 0 <= np.min(labels) <= np.max(labels) < n_classes)
            ):
                raise self.fail(f"node {i}'s scikit-learn expert has bad classes.")
        else:
            raise self.fail(f"node {i}'s classifier is a {type(expert).__name__}.")


def validate(estimator, path):
    """Refuse a decoded model whose parts do not fit together (see the
    module docstring); returns ``estimator``."""
    _Validator(path).root(estimator)
    return estimator
