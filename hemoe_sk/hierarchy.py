"""What the hierarchical classifier and regressor share: growing the tree.

:class:`HierarchicalMoEBase` holds the parameters, their constraints and the
fit body of :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier` and
:class:`~hemoe_sk.HierarchicalEmbeddingMoERegressor`: train the root network,
draw the held-out split, search every node's K (:func:`hemoe_sk.node.search_node`),
train the chosen experts, refit the leaves, and keep the fitted
:class:`~hemoe_sk.tree.HierarchyTree`. A subclass validates its targets into
the array the nets train on (class codes, or standardised float32 targets of
shape ``(n_samples, n_outputs)``) and calls :meth:`HierarchicalMoEBase._grow`;
it adds its own prediction methods and ``expert`` constraint.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from tqdm.auto import tqdm

from .base import (
    CLASS_WEIGHT_CONSTRAINT,
    EMBEDDER_CONSTRAINT,
    N_JOBS_CONSTRAINT,
    BaseNetEstimator,
)
from .nn.build import EmbedderParamsMixin, build_embedder_net
from .nn.inference import embed
from .nn.recipe import auto_batch_size
from .nn.training import RowSubset, seed_source, torch_seed, train_net
from .node import (
    NET_EXPERTS,
    SPLIT_TESTS,
    NetExpert,
    NodeContext,
    PairRouter,
    decide_split,
    epochs_run,
    most_confused_pair,
    node_splits,
    routed_outputs,
    search_node,
)
from .refine import refine_tree
from .tree import HierarchyTree, Node, TrainingRecord

__all__ = ["SPLIT_SIGNALS", "HierarchicalMoEBase"]


#: What the partition clusters (``split_signal``): the name of the clusterer
#: in :mod:`hemoe_sk.cluster.signals` each signal uses; ``"embedding"`` uses
#: the ``clusterer`` parameter.
SPLIT_SIGNALS = {
    "embedding": None,
    "confusion": "ClassGroupClusterer",
    "within-class": "WithinClassClusterer",
    "balanced": "BalancedKMeans",
}


def _signal_clusterer(signal, clusterer):
    if SPLIT_SIGNALS[signal] is None:
        return _default_clusterer() if clusterer is None else _routable(clusterer)
    if clusterer is not None:
        raise ValueError(
            f"clusterer={clusterer!r} is for split_signal='embedding'; "
            f"split_signal={signal!r} brings its own clusterer "
            f"(hemoe_sk.{SPLIT_SIGNALS[signal]})."
        )
    from .cluster import signals

    return getattr(signals, SPLIT_SIGNALS[signal])()


def _routable(clusterer):
    """``clusterer`` itself if it can route new points (has ``predict``),
    else wrapped in :class:`~hemoe_sk.NeighborVoteRouter`.

    Connectivity and density clusterers (``AgglomerativeClustering``,
    ``HDBSCAN``, ``SpectralClustering``, ``DBSCAN``) label only the points
    they were fitted on; the router assigns a new point to the cluster its
    nearest training neighbours vote for.
    """
    if hasattr(clusterer, "predict"):
        return clusterer
    from .cluster.routing import NeighborVoteRouter

    return NeighborVoteRouter(clusterer)


def _router_param_grid(clusterer, grid):
    """``cluster_param_grid`` addressed to the router that will run.

    When :func:`_routable` wrapped the clusterer, the user's keys name the
    clusterer's own parameters (``min_cluster_size``); the router reaches
    them as ``clusterer__min_cluster_size``. A clusterer without
    ``n_clusters`` (HDBSCAN, DBSCAN) finds K itself, so with no grid given it
    is tried once, as it is, against the unsplit node.
    """
    from .cluster.routing import NeighborVoteRouter

    if not isinstance(clusterer, NeighborVoteRouter):
        return grid
    own = set(clusterer.get_params(deep=False))
    inner = clusterer.clusterer.get_params(deep=False) if clusterer.clusterer else {}

    def route(point):
        return {
            key if key in own or key.startswith("clusterer__") or key not in inner
            else f"clusterer__{key}": values
            for key, values in point.items()
        }

    if grid is None:
        return None if "n_clusters" in inner else [{}]
    return route(grid) if isinstance(grid, dict) else [route(g) for g in grid]


def _default_clusterer():
    from .cluster.dec import DECClusterer

    # Small and quick: it runs at every node, once per candidate K, on
    # embeddings (tens of dimensions), not on the raw features.
    return DECClusterer(
        hidden_dims=(64,),
        embedding_dim=8,
        pretrain_epochs=30,
        max_iter=300,
        n_init=3,
    )


class HierarchicalMoEBase(EmbedderParamsMixin, BaseNetEstimator):
    """Parameters and tree growing shared by the hierarchical estimators.

    Not an estimator by itself (see the module docstring). The parameters
    are documented on :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier`.
    """

    #: Whether the tree predicts real targets (set by the regressor).
    _regression = False

    _parameter_constraints = {
        **BaseNetEstimator._parameter_constraints,
        **EMBEDDER_CONSTRAINT,
        **N_JOBS_CONSTRAINT,
        **CLASS_WEIGHT_CONSTRAINT,
        # Without predict: wrapped in NeighborVoteRouter at fit.
        "clusterer": [None, HasMethods(["fit"])],
        "split_signal": [StrOptions(set(SPLIT_SIGNALS))],
        "n_clusters_grid": ["array-like"],
        "cluster_param_grid": [None, dict, list],
        "reducer": [None, HasMethods(["fit", "transform"])],
        "overlap": [Interval(numbers.Real, 0, 1, closed="left")],
        "selection": [StrOptions({"held-out", "node"})],
        "split_test": [StrOptions(set(SPLIT_TESTS))],
        "split_alpha": [Interval(numbers.Real, 0, 1, closed="neither")],
        "min_gain": [StrOptions({"auto"}), Interval(numbers.Real, 0, 1, closed="left")],
        "refit": ["boolean"],
        "search_expert": [StrOptions({"same", "head"})],
        "outside_share": [Interval(numbers.Real, 0, 1, closed="left")],
        "refine_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "refine_balance": [Interval(numbers.Real, 0, None, closed="left")],
        "pair_expert": ["boolean"],
        "pair_margin": [Interval(numbers.Real, 0, 1, closed="right")],
        "min_cluster_size": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Interval(numbers.Real, 0, 1, closed="neither"),
        ],
        "max_depth": [Interval(numbers.Integral, 0, None, closed="left")],
        "validation_size": [Interval(numbers.Real, 0, 1, closed="neither")],
        "cv": [None, "cv_object"],
        "routing": [StrOptions({"hard", "soft"})],
        "expert_rank": [Interval(numbers.Integral, 1, None, closed="left")],
        "expert_kl": [Interval(numbers.Real, 0, None, closed="left")],
        "expert_max_epochs": [None, Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        embedder=None,
        *,
        clusterer=None,
        split_signal="embedding",
        n_clusters_grid=(2, 3, 4, 5),
        cluster_param_grid=None,
        reducer=None,
        overlap=0.0,
        selection="held-out",
        split_test="bootstrap",
        split_alpha=0.05,
        min_gain="auto",
        refit=True,
        search_expert="same",
        outside_share=0.0,
        refine_epochs=0,
        refine_balance=0.01,
        pair_expert=False,
        pair_margin=0.2,
        min_cluster_size=30,
        max_depth=2,
        validation_size=0.2,
        cv=None,
        routing="soft",
        expert="finetune",
        expert_rank=4,
        expert_kl=0.0,
        class_weight=None,
        max_epochs=100,
        expert_max_epochs=None,
        lr=2e-3,
        batch_size="auto",
        optimizer=torch.optim.AdamW,
        early_stopping=0.1,
        patience=20,
        lr_schedule="warmup_cosine",
        device="cpu",
        n_jobs=None,
        random_state=None,
        verbose=0,
        **embedder__kwargs,
    ):
        self.embedder = embedder
        self.clusterer = clusterer
        self.split_signal = split_signal
        self.n_clusters_grid = n_clusters_grid
        self.cluster_param_grid = cluster_param_grid
        self.reducer = reducer
        self.overlap = overlap
        self.selection = selection
        self.split_test = split_test
        self.split_alpha = split_alpha
        self.min_gain = min_gain
        self.refit = refit
        self.search_expert = search_expert
        self.outside_share = outside_share
        self.refine_epochs = refine_epochs
        self.refine_balance = refine_balance
        self.pair_expert = pair_expert
        self.pair_margin = pair_margin
        self.min_cluster_size = min_cluster_size
        self.max_depth = max_depth
        self.validation_size = validation_size
        self.cv = cv
        self.routing = routing
        self.expert = expert
        self.expert_rank = expert_rank
        self.expert_kl = expert_kl
        self.class_weight = class_weight
        self.max_epochs = max_epochs
        self.expert_max_epochs = expert_max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.early_stopping = early_stopping
        self.patience = patience
        self.lr_schedule = lr_schedule
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        # Stored as given, in one dict that get_params/set_params expose;
        # checked in fit, as scikit-learn wants of __init__.
        self._embedder_kwargs = dict(embedder__kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # -- fit -----------------------------------------------------------------
    def _min_size(self, n):
        if isinstance(self.min_cluster_size, numbers.Integral):
            return int(self.min_cluster_size)
        return max(1, math.ceil(self.min_cluster_size * n))

    def _grow(self, X, y_enc, n_classes, module_params, weight=None):
        """Grow the tree on validated ``X`` and encoded targets ``y_enc``
        (``n_classes`` output columns), rows weighted by ``weight`` (``None``:
        all 1); set the fitted tree attributes."""
        if self.pair_expert and (self.selection != "held-out" or self.cv is not None):
            raise ValueError(
                "pair_expert=True keeps a cluster-pair expert only where it beats the "
                "plain split on held-out rows: it needs selection='held-out' and "
                f"cv=None; got selection={self.selection!r}, cv={self.cv!r}."
            )
        grid = [int(k) for k in np.ravel(self.n_clusters_grid)]
        if not grid or min(grid) < 2:
            raise ValueError(
                f"n_clusters_grid must hold integers >= 2, got {self.n_clusters_grid!r}."
            )
        rng = seed_source(self.random_state)
        net_params = self._net_params()
        device = net_params["device"]
        expert_epochs = (
            max(1, self.max_epochs // 4)
            if self.expert_max_epochs is None
            else int(self.expert_max_epochs)
        )
        clusterer = _signal_clusterer(self.split_signal, self.clusterer)
        if "device" in clusterer.get_params() and self.clusterer is None:
            clusterer = clusterer.set_params(device=device)
        cluster_grid = _router_param_grid(clusterer, self.cluster_param_grid)

        net = build_embedder_net(
            self.embedder,
            n_features=X.shape[1],
            n_classes=n_classes,
            embedder_params=module_params,
            regression=self._regression,
            X=X,
            **net_params,
        )
        try:
            with torch_seed(0):
                net.initialize()
        except TypeError as exc:
            raise TypeError(
                f"Cannot build the embedder module: {exc}. Check the embedder__* "
                "parameters against the module's constructor."
            ) from None
        all_rows = np.arange(len(X))
        root_seed = int(rng.randint(np.iinfo(np.int32).max))
        min_size = self._min_size(len(X))
        # Held-out selection: one split of the training set, drawn before any
        # network trains; its held-out rows choose every split of the tree.
        held = None
        root_training = []
        if (
            self.selection == "held-out"
            and self.cv is None
            and self.max_depth > 0
            and len(X) >= 2 * min_size
        ):
            split_seed = int(rng.randint(np.iinfo(np.int32).max))
            _, val = node_splits(y_enc, self.validation_size, None, split_seed)[0]
            held = np.zeros(len(X), dtype=bool)
            held[val] = True
            stage, root_rows = "root network (fit part)", all_rows[~held]
            seed = int(rng.randint(np.iinfo(np.int32).max))
        else:
            stage, root_rows, seed = "root network", all_rows, root_seed
        train_net(
            net, RowSubset(X, y_enc, root_rows, weight=weight), seed=seed, stage=stage
        )
        root_training.append(TrainingRecord(stage, len(root_rows), epochs_run(net)))
        root_epochs = int(getattr(net, "max_epochs", self.max_epochs))

        nodes = []
        progress = tqdm(
            desc="hemoe_sk nodes", unit="node", disable=self.verbose < 1, leave=False
        )

        def add_node(rows, depth, parent, embedder, classifier, epochs, training):
            node = Node(
                node_id=len(nodes),
                depth=depth,
                parent=parent,
                n_samples=len(rows),
                class_counts=self._class_counts(y_enc[rows], n_classes),
                embedder=embedder,
                classifier=classifier,
                epochs=epochs,
                training=training,
            )
            nodes.append(node)
            return node

        root = add_node(
            all_rows, 0, -1, net, NetExpert(net), root_epochs, root_training
        )
        pending = [(root, all_rows, held, root_seed)]
        leaves = []
        while pending:
            node, rows, node_held, node_seed = pending.pop(0)
            progress.update(1)
            min_size = self._min_size(len(rows))
            can_split = (
                node.depth < self.max_depth
                and not node.pair  # a cluster-pair expert is a leaf
                and len(rows) >= 2 * min_size
                and len(np.unique(y_enc[rows], axis=0)) > 1
            )
            if node.depth == 0 and self.max_depth > 0 and len(rows) < 2 * min_size:
                warnings.warn(
                    f"The training set has {len(rows)} samples, fewer than 2 * "
                    f"min_cluster_size = {2 * min_size}: the root cannot be split and "
                    "the model is the embedder network alone (one leaf).",
                    UserWarning,
                    stacklevel=5,  # _grow, fit and its two decorators
                )
            if can_split and node_held is not None and not (
                node_held.any() and (~node_held).any()
            ):
                can_split = False
                node.note = "not searched: no held-out rows reached this node."
            if can_split:
                children = self._split(
                    node, rows, node_held, X, y_enc, n_classes, clusterer, grid,
                    cluster_grid, min_size, expert_epochs, rng, device, weight,
                )
                for c_rows, c_held, expert, c_seed, record in children:
                    child_embedder = expert.net if expert.net is not None else node.embedder
                    child = add_node(
                        c_rows, node.depth + 1, node.node_id, child_embedder, expert,
                        node.epochs + expert_epochs, [record],
                    )
                    node.children.append(child.node_id)
                    if isinstance(node.router, PairRouter) and (
                        len(node.children) == node.router.n_clusters
                    ):
                        child.pair = node.router.pair
                    pending.append((child, c_rows, c_held, c_seed))
            if node.is_leaf:
                leaves.append((node, rows, node_held, node_seed))
        progress.close()
        for node, rows, node_held, node_seed in leaves:
            if self.refit and node_held is not None:
                self._refit_leaf(
                    nodes, node, rows, X, y_enc, n_classes, expert_epochs,
                    node_seed, device, weight,
                )
        tree = HierarchyTree(nodes, n_classes)
        self.refine_loss_ = []
        if self.refine_epochs > 0 and tree.n_leaves > 1:
            self.refine_loss_ = refine_tree(
                tree, X, y_enc,
                epochs=self.refine_epochs,
                lr=self.lr,
                batch_size=(
                    auto_batch_size(len(X)) if self.batch_size == "auto"
                    else self.batch_size
                ),
                balance=self.refine_balance,
                seed=int(rng.randint(np.iinfo(np.int32).max)),
                device=device,
                optimizer=self.optimizer,
                sample_weight=weight,
            )
            for node in nodes:
                node.training.append(
                    TrainingRecord("joint refinement", len(X), len(self.refine_loss_))
                )
        for node, rows, _, _ in leaves:
            node.train_accuracy = self._node_score(node, X, y_enc, rows, weight)

        self.embedder_ = net
        self.tree_ = tree
        self.n_leaves_ = self.tree_.n_leaves
        self.depth_ = self.tree_.max_depth
        self.expert_max_epochs_ = expert_epochs
        self.max_path_epochs_ = self.tree_.max_path_epochs + (
            int(self.refine_epochs) if self.refine_loss_ else 0
        )

    def _context(self, node, rows, net, X, y_enc, n_classes, expert_epochs, device,
                 E=None, weight=None):
        return NodeContext(
            X=X,
            y=y_enc,
            rows=rows,
            E=embed(net, X, rows=rows) if E is None else E,
            net=net,
            n_classes=n_classes,
            expert=self.expert,
            expert_epochs=expert_epochs,
            expert_rank=int(self.expert_rank),
            expert_kl=float(self.expert_kl),
            head_params={
                **{k: v for k, v in self._net_params().items() if k != "max_epochs"},
                "device": device,
            },
            name=f"node {node.node_id} (depth {node.depth})",
            overlap=float(self.overlap),
            outside_share=float(self.outside_share),
            search_expert=self.search_expert,
            regression=self._regression,
            # The regressor's ``scoring``; a classifier's search scores accuracy.
            scoring=getattr(self, "scoring", "r2"),
            w=weight,
        )

    def _split(
        self, node, rows, held, X, y_enc, n_classes, clusterer, grid, cluster_grid,
        min_size, expert_epochs, rng, device, weight=None,
    ):
        """Search the node's K.

        Returns ``[(child rows, child held-out mask, expert, expert seed,
        TrainingRecord of the expert)]``, or ``[]`` when the node stays whole.
        """
        context = self._context(
            node, rows, node.embedder, X, y_enc, n_classes, expert_epochs, device,
            weight=weight,
        )
        name = context.name
        seed = int(rng.randint(np.iinfo(np.int32).max))
        splits = None
        if held is not None:
            splits = [(np.flatnonzero(~held), np.flatnonzero(held))]
        result = search_node(
            context,
            n_clusters_grid=grid,
            clusterer=clusterer,
            min_cluster_size=min_size,
            validation_size=self.validation_size,
            cv=self.cv,
            seed=seed,
            cluster_param_grid=cluster_grid,
            reducer=self.reducer,
            min_gain=self.min_gain,
            split_test=self.split_test,
            split_alpha=self.split_alpha,
            splits=splits,
            return_experts=held is not None and self.search_expert == "same",
            n_jobs=self.n_jobs,
        )
        node.search = {
            "scores": result.scores,
            "cv_results": result.cv_results,
            "min_gain": result.min_gain,
            "decision": result.decision,
        }
        skipped = [] if cluster_grid else [
            k for k in grid if f"K={k}" not in result.scores
        ]
        if skipped:
            node.note = (
                f"K={skipped} not tried: {len(rows)} samples cannot make that many "
                f"clusters of min_cluster_size={min_size}."
            )
            if node.depth == 0 and set(skipped) == set(grid):
                warnings.warn(
                    f"No K in n_clusters_grid={tuple(grid)} fits the {len(rows)} "
                    f"training samples with min_cluster_size={min_size}: the root "
                    "is a leaf (the embedder network alone).",
                    UserWarning,
                    stacklevel=6,
                )
        if result.n_clusters == 1:
            return []
        node.router = result.router
        # The experts train on the rows the networks may see: the fit part
        # under held-out selection, else all of the node's rows.
        trainable = np.arange(len(rows)) if held is None else np.flatnonzero(~held)
        labels = result.labels[trainable]
        proba = (
            result.router.predict_proba(context.E[trainable])
            if self.overlap > 0 else None
        )
        children = []
        training = [] if result.training is None else list(result.training)
        for c in range(result.n_clusters):
            own = np.flatnonzero(result.labels == c)
            if len(own) == 0:
                # Cannot happen on the fit rows (the size rule excludes it),
                # so every cluster keeps at least those rows.
                raise RuntimeError(f"{name}: cluster {c} received no rows.")
            if result.experts is not None:
                # The search's expert, trained on exactly these rows.
                expert = result.experts[c]
            else:
                expert = context.train_expert(
                    trainable[context.expert_positions(labels, proba, c, seed + c)],
                    seed=seed + 1 + c,
                    stage=f"{name}, final expert {c}",
                    log=training,
                )
            children.append(
                (rows[own], None if held is None else held[own], expert, seed + 1 + c,
                 training[c])
            )
        if self.pair_expert and held is not None:
            pair_child = self._pair_child(
                node, context, result, rows, held, [c[2] for c in children], seed
            )
            if pair_child is not None:
                children.append(pair_child)
        return children

    def _pair_child(self, node, context, result, rows, held, experts, seed):
        """A cluster-pair expert for the node's kept split, if it pays.

        Trained on the fit rows of the two clusters the router hesitates
        between most, it takes the rows ambiguous between them; it is kept
        when, on the node's held-out rows, the split with it beats the split
        without it by ``split_test``. Sets ``node.router`` to a
        :class:`~hemoe_sk.node.PairRouter` and returns the child's
        ``(rows, held-out mask, expert, seed, TrainingRecord)``, or returns
        ``None``.
        """
        fit, val = np.flatnonzero(~held), np.flatnonzero(held)
        router = result.router
        pair, n_ambiguous = most_confused_pair(
            router.predict_proba(context.E[fit]), self.pair_margin
        )
        if pair is None:
            node.note = "no pair expert: no fit row is ambiguous between two clusters."
            return None
        union = np.isin(result.labels, pair)
        k = router.n_clusters
        training = []
        expert = context.train_expert(
            fit[union[fit]], seed=seed + 1 + k, stage=f"{context.name}, pair expert {pair}",
            log=training,
        )
        # Held-out outcomes with and without the pair expert: only the rows
        # ambiguous between the pair differ.
        E_val = context.E[val]
        pair_router = PairRouter(router, pair, self.pair_margin)
        plain, with_pair = router.predict(E_val), pair_router.predict(E_val)
        y_val = context.y[rows[val]]

        def outcomes(labels, route_experts):
            out = routed_outputs(
                route_experts, labels, context.X, rows[val], E_val, context.n_classes
            )
            return self._row_outcomes(out, y_val)

        decision = decide_split(
            outcomes(with_pair, [*experts, expert]),
            outcomes(plain, experts),
            test=self.split_test,
            alpha=self.split_alpha,
            min_gain=self.min_gain,
            random_state=seed,
            sample_weight=None if context.w is None else context.w[rows[val]],
        )
        node.search["pair"] = {"pair": pair, "n_ambiguous": n_ambiguous,
                               "decision": decision}
        if not decision.keep:
            return None
        node.router = pair_router
        return rows[union], held[union], expert, seed + 1 + k, training[0]

    def _refit_leaf(
        self, nodes, node, rows, X, y_enc, n_classes, expert_epochs, seed, device,
        weight=None,
    ):
        """Train a leaf's expert again on all of its rows (held-out selection).

        The root is retrained from scratch with the base network's seed; any
        other leaf is its parent's network fine-tuned (or a head trained on
        its parent's embeddings) exactly as in the search, on all its rows.
        """
        if node.parent < 0:
            train_net(node.embedder, RowSubset(X, y_enc, rows, weight=weight),
                      seed=seed, stage="root network")
            node.training.append(
                TrainingRecord("root network", len(rows), epochs_run(node.embedder))
            )
            return
        parent = nodes[node.parent]
        # A fine-tuned expert reads X, not the parent's embeddings.
        E = np.empty((len(rows), 0), np.float32) if self.expert in NET_EXPERTS else None
        context = self._context(
            node, rows, parent.embedder, X, y_enc, n_classes, expert_epochs, device, E,
            weight,
        )
        expert = context.train_expert(
            np.arange(len(rows)), seed=seed, stage=f"{context.name}, refit on all rows",
            log=node.training,
        )
        node.classifier = expert
        node.embedder = expert.net if expert.net is not None else parent.embedder

    def apply(self, X):
        """Id of the leaf every sample reaches under hard routing."""
        return self.tree_.apply(self._validate_X(X))

    def decision_path(self, X):
        """Sparse CSR indicator ``(n_samples, n_nodes)`` of the visited nodes."""
        return self.tree_.decision_path(self._validate_X(X))
