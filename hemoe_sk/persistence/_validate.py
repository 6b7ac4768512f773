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
* target scales are finite and positive, class labels unique;
* every scikit-learn part runs once on two rows of zeros (its restored
  attributes are of the kinds its methods need), and so does the whole
  model: a hierarchy node by node (every router and every leaf's expert,
  not only the path the zeros take).
"""

from __future__ import annotations

import numbers
import warnings

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
        codec = codec_of(type(est))
        fitted = [a for a in (*codec.arrays, *codec.values, "n_features_in_") if a in state]
        if fitted:
            missing = [a for a in _REQUIRED.get(name, ()) if a not in state]
            if missing:
                raise self.fail(f"the fitted {name} lacks {missing}.")
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
        if "n_features_in_" in state and not _int(n_features, 1, 2**31):
            raise self.fail(f"{name}.n_features_in_ is {n_features!r:.40}.")
        for attr in ("net_", "embedder_", "base_net_", "autoencoder_"):
            net = state.get(attr)
            while _build(net) == "expert_net":
                net = net.parent_net_
            wants = getattr(net, "get_params", dict)(deep=False).get("module__n_features")
            if n_features is not None and wants is not None and wants != n_features:
                raise self.fail(
                    f"{name}.{attr} reads {wants} features where the model has "
                    f"{n_features}."
                )
        if "module_" in state:
            if _build(state["module_"]) != "module":
                raise self.fail(f"{name}.module_ is not a saved torch module.")
            first = next(
                (m for m in state["module_"].modules() if hasattr(m, "in_features")),
                None,
            )
            if first is not None and n_features not in (None, first.in_features):
                raise self.fail(f"{name}.module_ reads {first.in_features} features.")
        for attr in ("reconstruction_scale_", "noise_variance_"):
            value = state.get(attr)
            if value is None:
                continue
            if not (
                isinstance(value, numbers.Real)
                and not isinstance(value, bool)
                and 1e-30 <= value <= 1e30
            ):
                raise self.fail(f"{name}.{attr} is not a positive finite number.")
        centers = state.get("cluster_centers_")
        if centers is not None and (
            centers.ndim != 2 or not np.isfinite(centers).all()
        ):
            raise self.fail(f"{name}.cluster_centers_ is not a finite 2-D array.")
        if name in _HIERARCHIES and "tree_" in state:
            self.tree(state["tree_"], width, name)
            self.route_zeros(state, name)

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

    def route_zeros(self, state, name):
        """Two rows of zeros through every node, as ``predict`` walks them:
        each inner node's router reads its network's embeddings, each leaf's
        expert gives the tree's outputs (widths agree everywhere, not only on
        the path some input happens to take)."""
        from hemoe_sk.nn.inference import embed

        n = state.get("n_features_in_")
        tree = state["tree_"]
        root = tree.nodes[0].embedder
        while _build(root) == "expert_net":
            root = root.parent_net_
        if n is None or root.get_params(deep=False).get("module__n_features") != n:
            return  # the width is not known from the real weights
        X = np.zeros((2, n), dtype=np.float32)
        rows = np.arange(2)
        for node in tree.nodes:
            leaf = node.router is None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    needs_e = not leaf or node.classifier.needs_embedding
                    E = embed(node.embedder, X) if needs_e else None
                    if leaf:
                        out = node.classifier.predict_proba(X, rows, E)
                    else:
                        out = node.router.predict_proba(E)
                        labels = node.router.predict(E)
            except Exception as exc:  # noqa: BLE001 - any mismatch of the parts
                what = "expert" if leaf else "router"
                raise self.fail(
                    f"node {node.node_id}'s {what} does not fit its network "
                    f"({type(exc).__name__}: {str(exc)[:160]})."
                ) from None
            width = tree.n_classes if leaf else len(node.children)
            if np.shape(out) != (2, width) or not np.isfinite(out).all():
                raise self.fail(f"node {node.node_id} gives outputs of another width.")
            if not leaf and not all(0 <= lab < width for lab in labels):
                raise self.fail(f"node {node.node_id}'s router gives other routes.")

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


#: Fitted attributes a fitted estimator (one with any fitted attribute) needs
#: to predict.
_REQUIRED = {
    "HierarchicalEmbeddingMoEClassifier": ("classes_", "embedder_", "tree_"),
    "HierarchicalEmbeddingMoERegressor": (
        "y_mean_", "y_scale_", "n_outputs_", "embedder_", "tree_",
    ),
    "MixtureOfExpertsClassifier": ("classes_", "net_"),
    "MixtureOfExpertsRegressor": ("y_mean_", "y_scale_", "n_outputs_", "net_"),
    "FineTunedEnsembleClassifier": ("classes_", "estimators_"),
    "DECClusterer": ("autoencoder_", "cluster_centers_"),
    "MixtureOfAutoencodersClusterer": ("autoencoder_", "module_"),
    "NeighborVoteRouter": ("nn_", "labels_"),
    "BalancedKMeans": ("cluster_centers_",),
    "ClassGroupClusterer": ("head_", "group_of_class_"),
    "WithinClassClusterer": ("subcluster_centers_", "subcluster_group_"),
}

_METHODS = ("predict_proba", "predict", "transform", "decision_function")


def _smoke(obj, path):
    """Run a fitted scikit-learn part on two rows of zeros: its fitted
    attributes are data of the right kinds, or this refuses the file (rather
    than ``predict`` failing later)."""
    n = vars(obj).get("n_features_in_")
    if not _int(n, 1, 10**6):
        return
    dtype = next(  # the dtype it was fitted on (KMeans keeps float32 as is)
        (
            v.dtype
            for k, v in vars(obj).items()
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim == 2
        ),
        np.float64,
    )
    if _build(obj) == "estimator":
        dtype = np.float32  # hemoe_sk's estimators cast to float32 themselves
    X = np.zeros((2, n), dtype=dtype)
    for method in _METHODS:
        fn = getattr(obj, method, None)
        if fn is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(X)
        except Exception as exc:  # noqa: BLE001 - any failure of the restored state
            raise fail(
                path,
                f"the restored {type(obj).__name__} does not work "
                f"({type(exc).__name__}: {str(exc)[:160]}).",
            ) from None
        return


def validate(estimator, path, built=()):
    """Refuse a decoded model whose parts do not fit together (see the
    module docstring); returns ``estimator``.

    ``built`` are the ``(codec, object)`` pairs the reader built: every
    scikit-learn part among them is run once on zeros.
    """
    for codec, obj in built:
        if codec.build in ("sklearn", "refit"):
            _smoke(obj, path)
    _Validator(path).root(estimator)
    if (
        _build(estimator) == "estimator"
        and "n_features_in_" in vars(estimator)
        and _name(estimator) not in _HIERARCHIES  # walked node by node instead
    ):
        _smoke(estimator, path)  # the whole model, on two rows of zeros
    return estimator
