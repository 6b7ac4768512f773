"""HierarchicalEmbeddingMoEClassifier: fit grows the tree, predict routes."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .base import (
    EMBEDDER_CONSTRAINT,
    N_JOBS_CONSTRAINT,
    BaseNetEstimator,
    NetClassifierMixin,
    keep_state_on_error,
)
from .nn.build import EmbedderParamsMixin, build_embedder_net
from .nn.inference import embed
from .nn.training import RowSubset, seed_source, torch_seed, train_net
from .node import (
    NET_EXPERTS,
    SPLIT_TESTS,
    NetExpert,
    NodeContext,
    node_splits,
    search_node,
)
from .refine import refine_tree
from .tree import HierarchyTree, Node

__all__ = ["HierarchicalEmbeddingMoEClassifier"]

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
        return _default_clusterer() if clusterer is None else clusterer
    if clusterer is not None:
        raise ValueError(
            f"clusterer={clusterer!r} is for split_signal='embedding'; "
            f"split_signal={signal!r} brings its own clusterer "
            f"(hemoe_sk.{SPLIT_SIGNALS[signal]})."
        )
    from .cluster import signals

    return getattr(signals, SPLIT_SIGNALS[signal])()


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


class HierarchicalEmbeddingMoEClassifier(
    EmbedderParamsMixin, ClassifierMixin, NetClassifierMixin, BaseNetEstimator
):
    """Tree of specialists grown by clustering a network's embeddings.

    Fit trains a network (the *embedder*) on all the data, embeds the data
    with it (output layer cut off), clusters the embeddings, and trains one
    expert per cluster, starting from the pretrained network. The number of
    clusters K at every node is chosen by held-out weighted accuracy among
    ``n_clusters_grid`` and the unsplit node (K=1); a split is kept only when
    it beats the unsplit node. Each cluster is then treated the same way, down
    to ``max_depth``. Predict routes each sample from the root to a leaf
    (``routing="hard"``) or blends the leaves with the routing probabilities
    (``routing="soft"``).

    With ``max_depth=0`` the estimator is exactly the embedder network trained
    as a classifier.

    Parameters
    ----------
    embedder : None, torch ``nn.Module`` subclass or skorch ``NeuralNet``, \
            default=None
        The network. ``None`` uses :class:`~hemoe_sk.nn.MLPEmbedder`. A module
        class receives ``n_features``, ``n_classes`` and any ``embedder__*``
        keyword given to this estimator (skorch's convention), must return
        logits, and is trained with ``CrossEntropyLoss``. An unfitted skorch
        net is cloned, never mutated, and keeps its own training settings. The
        embedding is the module's ``embed(x)`` when it has one, else the input
        of its last ``nn.Linear``.
    clusterer : estimator, default=None
        Clusterer with ``fit`` and ``predict`` and an ``n_clusters``
        parameter, cloned for every node and every K. ``None`` uses a small
        :class:`~hemoe_sk.DECClusterer` (hidden_dims=(64,), embedding_dim=8,
        pretrain_epochs=30). A clusterer with a ``pretrain`` method (DEC) is
        pretrained once per node and refined for each K.
    split_signal : {"embedding", "confusion", "within-class", "balanced"}, \
            default="embedding"
        What the partition clusters (see :doc:`/signals`). ``"embedding"``:
        ``clusterer`` on the node's embeddings, which collapse onto the
        classes in a trained network, so clusters tend to be groups of
        classes. ``"confusion"``: groups of classes the node confuses with
        each other (spectral clustering of the symmetrised soft confusion
        matrix of a softmax head on the embeddings), routed by the summed
        class probabilities of each group, as in HD-CNN
        (:class:`~hemoe_sk.ClassGroupClusterer`). ``"within-class"``:
        sub-populations inside each class, grouped across classes
        (:class:`~hemoe_sk.WithinClassClusterer`). ``"balanced"``: k-means
        whose training clusters are equal in size, so that no expert starves
        (:class:`~hemoe_sk.BalancedKMeans`). Only ``"embedding"`` takes a
        ``clusterer``.
    n_clusters_grid : tuple of int, default=(2, 3, 4, 5)
        Candidate numbers of clusters at every node.
    cluster_param_grid : dict, list of dicts or None, default=None
        A general grid over the clusterer's own parameters, replacing
        ``n_clusters_grid``, for routers that find K themselves, e.g.
        ``{"clusterer__min_cluster_size": [10, 20, 40]}`` with
        ``NeighborVoteRouter(HDBSCAN())``. Every point is scored like a K.
    reducer : transformer or None, default=None
        Fitted per node on the embeddings before the clusterer (e.g.
        ``PCA(n_components=8)``); routing applies it too.
    overlap : float in [0, 1), default=0.0
        Each expert also trains on the points of other clusters with the
        highest soft assignment to its cluster, up to ``overlap`` times its
        cluster's size; it still predicts only what is routed to it. 0 keeps
        the clusters disjoint.
    selection : {"held-out", "node"}, default="held-out"
        Which rows choose the splits. ``"held-out"``: one stratified split of
        the training set (``validation_size``) is drawn before the root
        network trains; every network in the tree trains on the fit part
        only, and every node scores its candidates on the held-out rows that
        reached it, which no network on its path has seen (then, with
        ``refit``, the leaves train again on all their rows). ``"node"``
        (0.1's rule): the root network trains on all rows and every node
        draws its own validation split, whose rows the node's network has
        already seen, so its held-out scores are optimistic. Given ``cv``,
        selection is per node by that cross-validation.
    split_test : {"bootstrap", "mcnemar", "margin", "none"}, default="bootstrap"
        How the best candidate must beat the unsplit node (K=1) on the same
        held-out rows to be kept (see :func:`hemoe_sk.node.decide_split`): a
        one-sided paired bootstrap over rows or exact McNemar test at level
        ``split_alpha``; ``"margin"``: a gain above ``min_gain``, no test;
        ``"none"``: the best eligible split is always kept (a forced
        hierarchy, for demonstrations and inspection).
    split_alpha : float in (0, 1), default=0.05
        Significance level of ``split_test``.
    min_gain : "auto" or float, default="auto"
        The held-out gain over the unsplit node a split must also exceed.
        ``"auto"`` is 0 with a paired test, and one standard error of the
        unsplit accuracy, ``sqrt(a (1 - a) / n_held_out)``, with
        ``split_test="margin"``. ``0.0`` with ``"margin"`` keeps any strictly
        better split.
    refit : bool, default=True
        With ``selection="held-out"``, train every leaf's expert again,
        from the same starting network and for the same epochs, on all of the
        leaf's rows (fit and held-out part). A root that is not split is then
        exactly the base network (``max_depth=0``). Inner nodes keep their
        fit-part networks, because their routers were fitted on those
        networks' embeddings.
    search_expert : {"same", "head"}, default="same"
        What the K search trains to score a candidate: ``"same"``, the
        experts ``expert`` names; ``"head"``, a cheap linear head per cluster
        on the node's frozen embeddings (for every K, and for K=1), after
        which only the chosen K's experts are trained as ``expert`` says.
    outside_share : float in [0, 1), default=0.0
        Each expert also trains on this share of the node's rows outside its
        cluster, drawn at random (a down-weighted view of the rest of the
        node), so that it still knows the classes routing errors bring it.
    refine_epochs : int, default=0
        Epochs of joint refinement after the tree is grown (see
        :mod:`hemoe_sk.refine`): the whole tree is fine-tuned end to end as
        one soft mixture of its leaves, on all training rows, with learning
        rate ``lr``. 0 skips it.
    refine_balance : float, default=0.01
        Weight of refinement's load-balancing term (the KL divergence of each
        node's routing mass from its cluster proportions).
    min_cluster_size : int or float, default=30
        Smallest allowed cluster: an int counts samples, a float in (0, 1) is
        a fraction of the node's samples. A K is tried only if all of its
        clusters are at least this large; a node smaller than twice this is a
        leaf.
    max_depth : int, default=2
        Depth of the tree; 0 trains the embedder alone.
    validation_size : float, default=0.2
        Fraction of the training set (``selection="held-out"``), or of each
        node's data (``"node"``), held out to score the candidate K.
    cv : int, cross-validation generator or None, default=None
        If given, replaces ``validation_size``: the candidates are scored by
        this cross-validation of each node's data, and the router of the first
        fold is kept.
    routing : {"hard", "soft"}, default="soft"
        How :meth:`predict_proba` combines the leaves: the leaf each sample is
        routed to, or all leaves weighted by the product of the routing
        probabilities along their paths. Soft routing scored at least as well
        as hard on 5 of the 6 benchmark data sets, hence the default.
    expert : {"finetune", "residual", "lora", "head"} or classifier, \
            default="finetune"
        How a cluster's expert is made (see :doc:`/experts`):
        ``"finetune"`` continues training a copy of the node's network on the
        cluster (and the copy becomes the child node's embedder);
        ``"residual"`` keeps the node's network frozen and trains a copy of it
        whose output layer starts at zero, added to the frozen logits, so an
        untrained expert equals its parent; ``"lora"`` keeps the node's
        network frozen and shared, and trains rank-``expert_rank`` adapters on
        its Linear and Conv2d layers plus its own output layer (a leaf costs a
        small fraction of a full copy); ``"head"`` trains a new linear head on
        the node's frozen embeddings; a scikit-learn classifier is cloned and
        fit on the embeddings.
    expert_rank : int, default=4
        Rank of the adapters of ``expert="lora"``.
    expert_kl : float, default=0.0
        Weight of a KL penalty pulling a network expert's predictions toward
        its parent's (``"finetune"``, ``"residual"``, ``"lora"``); 0 is none.
    max_epochs : int, default=40
        Epochs of the root network.
    expert_max_epochs : int or None, default=None
        Epochs of each expert; ``None`` means ``max(1, max_epochs // 4)``.
    lr : float, default=1e-3
        Learning rate of every network and head.
    batch_size : int, default=64
        Training batch size.
    optimizer : torch optimizer class, default=torch.optim.Adam
    device : str, default="cpu"
        Torch device; ``"auto"`` uses CUDA when available. A CUDA device on a
        machine without CUDA falls back to the CPU with a warning.
    n_jobs : int or None, default=None
        Parallel candidates in each node's search (through joblib, so any
        joblib backend works: loky, Dask, Ray; see the user guide's
        "Parallel fitting"). Every backend grows the same tree.
    random_state : int, RandomState or None, default=None
        Seeds every network, split and clusterer. The global torch and numpy
        random states are left as they were.
    verbose : int, default=0
        0 is silent; 1 shows a progress bar over nodes.
    **embedder__kwargs
        ``embedder__<name>=value`` keywords passed to the embedder module.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string feature names.
    embedder_ : skorch NeuralNetClassifier
        The root network (the whole model when ``max_depth=0``).
    tree_ : HierarchyTree
        The fitted hierarchy (see :mod:`hemoe_sk.tree`).
    n_leaves_ : int
    depth_ : int
        Depth actually reached.
    expert_max_epochs_ : int
        Epochs each expert was trained.
    max_path_epochs_ : int
        Epochs along the longest root-to-leaf path (the root's plus one
        expert's per level, plus ``refine_epochs`` when the tree was refined);
        what an equal-training baseline should get.
    refine_loss_ : list of float
        Mean training loss of each joint refinement epoch (empty when the
        tree was not refined).

    See Also
    --------
    hemoe_sk.DECClusterer : the default node clusterer.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.cluster import KMeans
    >>> from hemoe_sk import HierarchicalEmbeddingMoEClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = HierarchicalEmbeddingMoEClassifier(
    ...     clusterer=KMeans(n_init=3), max_depth=1, min_cluster_size=10,
    ...     max_epochs=30, lr=0.01, random_state=0,
    ... ).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints = {
        **BaseNetEstimator._parameter_constraints,
        **EMBEDDER_CONSTRAINT,
        **N_JOBS_CONSTRAINT,
        "clusterer": [None, HasMethods(["fit", "predict"])],
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
        "expert": [
            StrOptions({"finetune", "residual", "lora", "head"}),
            HasMethods(["fit", "predict_proba"]),
        ],
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
        min_cluster_size=30,
        max_depth=2,
        validation_size=0.2,
        cv=None,
        routing="soft",
        expert="finetune",
        expert_rank=4,
        expert_kl=0.0,
        max_epochs=40,
        expert_max_epochs=None,
        lr=1e-3,
        batch_size=64,
        optimizer=torch.optim.Adam,
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
        self.min_cluster_size = min_cluster_size
        self.max_depth = max_depth
        self.validation_size = validation_size
        self.cv = cv
        self.routing = routing
        self.expert = expert
        self.expert_rank = expert_rank
        self.expert_kl = expert_kl
        self.max_epochs = max_epochs
        self.expert_max_epochs = expert_max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
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

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Grow the tree on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        module_params = self._module_params()
        X, y_enc, classes = self._validate_training_data(X, y)
        n_classes = len(classes)
        grid = [int(k) for k in np.ravel(self.n_clusters_grid)]
        if not grid or min(grid) < 2:
            raise ValueError(
                f"n_clusters_grid must hold integers >= 2, got {self.n_clusters_grid!r}."
            )
        # A stratified validation split needs every class in every part.
        needed = 2 if self.cv is None else (
            int(self.cv) if isinstance(self.cv, numbers.Integral) else 1
        )
        counts = np.bincount(y_enc)
        if self.max_depth > 0 and counts.min() < needed:
            warnings.warn(
                f"Classes {classes[counts < needed].tolist()} have fewer than "
                f"{needed} samples, the least a stratified validation split needs: "
                "the split that scores each node's candidates is drawn unstratified, "
                "and those classes may be missing from its held-out part.",
                UserWarning,
                stacklevel=4,  # fit's two decorators, then the caller
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

        net = build_embedder_net(
            self.embedder,
            n_features=X.shape[1],
            n_classes=n_classes,
            embedder_params=module_params,
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
            train_net(
                net,
                RowSubset(X, y_enc, all_rows[~held]),
                seed=int(rng.randint(np.iinfo(np.int32).max)),
                stage="root network (fit part)",
            )
        else:
            train_net(
                net, RowSubset(X, y_enc, all_rows), seed=root_seed, stage="root network"
            )
        root_epochs = int(getattr(net, "max_epochs", self.max_epochs))

        nodes = []
        progress = tqdm(
            desc="hemoe_sk nodes", unit="node", disable=self.verbose < 1, leave=False
        )

        def add_node(rows, depth, parent, embedder, classifier, epochs):
            node = Node(
                node_id=len(nodes),
                depth=depth,
                parent=parent,
                n_samples=len(rows),
                class_counts=np.bincount(y_enc[rows], minlength=n_classes),
                embedder=embedder,
                classifier=classifier,
                epochs=epochs,
            )
            nodes.append(node)
            return node

        root = add_node(all_rows, 0, -1, net, NetExpert(net), root_epochs)
        pending = [(root, all_rows, held, root_seed)]
        leaves = []
        while pending:
            node, rows, node_held, node_seed = pending.pop(0)
            progress.update(1)
            min_size = self._min_size(len(rows))
            can_split = (
                node.depth < self.max_depth
                and len(rows) >= 2 * min_size
                and len(np.unique(y_enc[rows])) > 1
            )
            if node.depth == 0 and self.max_depth > 0 and len(rows) < 2 * min_size:
                warnings.warn(
                    f"The training set has {len(rows)} samples, fewer than 2 * "
                    f"min_cluster_size = {2 * min_size}: the root cannot be split and "
                    "the model is the embedder network alone (one leaf).",
                    UserWarning,
                    stacklevel=4,
                )
            if can_split and node_held is not None and not (
                node_held.any() and (~node_held).any()
            ):
                can_split = False
                node.note = "not searched: no held-out rows reached this node."
            if can_split:
                children = self._split(
                    node, rows, node_held, X, y_enc, n_classes, clusterer, grid,
                    min_size, expert_epochs, rng, device,
                )
                for c_rows, c_held, expert, c_seed in children:
                    child_embedder = expert.net if expert.net is not None else node.embedder
                    child = add_node(
                        c_rows, node.depth + 1, node.node_id, child_embedder, expert,
                        node.epochs + expert_epochs,
                    )
                    node.children.append(child.node_id)
                    pending.append((child, c_rows, c_held, c_seed))
            if node.is_leaf:
                leaves.append((node, rows, node_held, node_seed))
        progress.close()
        for node, rows, node_held, node_seed in leaves:
            if self.refit and node_held is not None:
                self._refit_leaf(
                    nodes, node, rows, X, y_enc, n_classes, expert_epochs,
                    node_seed, device,
                )
        tree = HierarchyTree(nodes, n_classes)
        self.refine_loss_ = []
        if self.refine_epochs > 0 and tree.n_leaves > 1:
            self.refine_loss_ = refine_tree(
                tree, X, y_enc,
                epochs=self.refine_epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                balance=self.refine_balance,
                seed=int(rng.randint(np.iinfo(np.int32).max)),
                device=device,
                optimizer=self.optimizer,
            )
        for node, rows, _, _ in leaves:
            node.train_accuracy = self._node_accuracy(node, X, y_enc, rows)

        self.classes_ = classes
        self.embedder_ = net
        self.tree_ = tree
        self.n_leaves_ = self.tree_.n_leaves
        self.depth_ = self.tree_.max_depth
        self.expert_max_epochs_ = expert_epochs
        self.max_path_epochs_ = self.tree_.max_path_epochs + (
            int(self.refine_epochs) if self.refine_loss_ else 0
        )
        return self

    def _context(self, node, rows, net, X, y_enc, n_classes, expert_epochs, device,
                 E=None):
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
                "lr": self.lr,
                "batch_size": self.batch_size,
                "optimizer": self.optimizer,
                "device": device,
            },
            name=f"node {node.node_id} (depth {node.depth})",
            overlap=float(self.overlap),
            outside_share=float(self.outside_share),
            search_expert=self.search_expert,
        )

    def _split(
        self, node, rows, held, X, y_enc, n_classes, clusterer, grid, min_size,
        expert_epochs, rng, device,
    ):
        """Search the node's K.

        Returns ``[(child rows, child held-out mask, expert, expert seed)]``,
        or ``[]`` when the node stays whole.
        """
        context = self._context(
            node, rows, node.embedder, X, y_enc, n_classes, expert_epochs, device
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
            cluster_param_grid=self.cluster_param_grid,
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
        skipped = [] if self.cluster_param_grid else [
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
                    stacklevel=5,
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
                )
            children.append(
                (rows[own], None if held is None else held[own], expert, seed + 1 + c)
            )
        return children

    def _refit_leaf(
        self, nodes, node, rows, X, y_enc, n_classes, expert_epochs, seed, device
    ):
        """Train a leaf's expert again on all of its rows (held-out selection).

        The root is retrained from scratch with the base network's seed; any
        other leaf is its parent's network fine-tuned (or a head trained on
        its parent's embeddings) exactly as in the search, on all its rows.
        """
        if node.parent < 0:
            train_net(node.embedder, RowSubset(X, y_enc, rows), seed=seed,
                      stage="root network")
            return
        parent = nodes[node.parent]
        # A fine-tuned expert reads X, not the parent's embeddings.
        E = np.empty((len(rows), 0), np.float32) if self.expert in NET_EXPERTS else None
        context = self._context(
            node, rows, parent.embedder, X, y_enc, n_classes, expert_epochs, device, E
        )
        expert = context.train_expert(
            np.arange(len(rows)), seed=seed, stage=f"{context.name}, refit on all rows"
        )
        node.classifier = expert
        node.embedder = expert.net if expert.net is not None else parent.embedder

    @staticmethod
    def _node_accuracy(node, X, y_enc, rows):
        E = embed(node.embedder, X, rows=rows) if node.classifier.needs_embedding else None
        proba = node.classifier.predict_proba(X, rows, E)
        return float(np.mean(proba.argmax(axis=1) == y_enc[rows]))

    # -- predict -------------------------------------------------------------
    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        X = self._validate_X(X)
        return self.tree_.predict_proba(X, routing=self.routing)

    def apply(self, X):
        """Id of the leaf every sample reaches under hard routing."""
        return self.tree_.apply(self._validate_X(X))

    def decision_path(self, X):
        """Sparse CSR indicator ``(n_samples, n_nodes)`` of the visited nodes."""
        return self.tree_.decision_path(self._validate_X(X))

    def explain_routes(self, X, *, top_k=3, as_frame=False):
        """Route of every sample root to leaf, with the routing probabilities.

        A thin wrapper of :func:`hemoe_sk.inspection.explain_routes` (see it
        for the record's keys); :func:`hemoe_sk.inspection.format_route`
        writes one record as text.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        top_k : int, default=3
            Number of the leaf's most probable classes to report.
        as_frame : bool, default=False
            Return a pandas DataFrame instead of a list of records.

        Returns
        -------
        records : list of dict, or pandas.DataFrame
            One per sample; ``record["leaf"]`` equals ``apply(X)``.
        """
        from .inspection import explain_routes

        return explain_routes(self, X, top_k=top_k, as_frame=as_frame)

    def export_text(self, decimals=3):
        """Readable tree: per node depth, size, class counts, the K search
        scores and the chosen K, and each leaf's training accuracy."""
        check_is_fitted(self)
        return self.tree_.export_text(class_names=self.classes_, decimals=decimals)
