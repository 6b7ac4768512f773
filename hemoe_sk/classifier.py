"""HierarchicalEmbeddingMoEClassifier: fit grows the tree, predict routes."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_doc
from .base import NetClassifierMixin, keep_state_on_error
from .hierarchy import SPLIT_SIGNALS, HierarchicalMoEBase
from .nn.inference import embed

__all__ = ["SPLIT_SIGNALS", "HierarchicalEmbeddingMoEClassifier"]


@fill_doc
class HierarchicalEmbeddingMoEClassifier(
    ClassifierMixin, NetClassifierMixin, HierarchicalMoEBase
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
        The network. ``None`` uses :class:`~hemoe_sk.nn.TabularEmbedder` (robust
        scaling, PLR embeddings of the numerical features, an MLP sized from
        the training rows; see :doc:`/recipe`). A module
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
        pretrained once per node and refined for each K. A clusterer without
        ``predict`` (``AgglomerativeClustering``, ``HDBSCAN``,
        ``SpectralClustering``, ``DBSCAN``) is wrapped in
        :class:`~hemoe_sk.NeighborVoteRouter`, which routes a new point by
        the vote of its nearest training neighbours; ``cluster_param_grid``
        may then name the clusterer's own parameters
        (``{"min_cluster_size": [10, 20]}``), and one that finds K itself
        (HDBSCAN, DBSCAN) is tried once, as given, when no grid is.
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
    pair_expert : bool, default=False
        Cluster-pair experts. At every kept split, the two clusters the router
        hesitates between most (the most fit rows whose two most probable
        clusters they are, within ``pair_margin``) get one more expert,
        trained on their union; the rows ambiguous between them are routed to
        it (softly: their probability of both clusters moves to it), so points
        on a boundary are not left to an expert that saw half of their
        neighbourhood. It is kept only where it beats the plain split on the
        node's held-out rows by ``split_test`` (it needs
        ``selection="held-out"``), and it is a leaf.
    pair_margin : float in (0, 1], default=0.2
        How close the two routing probabilities must be for a row to count as
        ambiguous between a pair.
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
    class_weight : None, "balanced" or dict, default=None
        Weight of each class (see :doc:`/weights`): ``None``, all 1;
        ``"balanced"``, inversely proportional to the class's (weighted)
        frequency, as :func:`sklearn.utils.class_weight.compute_class_weight`;
        a dict ``{label: weight}``, 1 for labels not in it. A row's weight is
        its ``sample_weight`` times its class's weight, and it weighs that
        much in every loss, K search score and split test of the tree.
    max_epochs : int, default=100
        Most epochs of the root network (early stopping may end sooner).
    expert_max_epochs : int or None, default=None
        Most epochs of each expert's fine-tuning, which has its own schedule
        and early stopping; ``None`` means ``max(1, max_epochs // 4)``.
    lr : float, default=2e-3
        Peak learning rate of every network and head (linear warm-up, then
        cosine decay over each training call; see :doc:`/recipe`).
    batch_size : int or "auto", default="auto"
        Training batch size; ``"auto"``: the power of two nearest to the
        square root of the rows a network trains on, in [32, 1024].
    optimizer : torch optimizer class, default=torch.optim.AdamW
    %(recipe_training)s
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
        **HierarchicalMoEBase._parameter_constraints,
        "expert": [
            StrOptions({"finetune", "residual", "lora", "head"}),
            HasMethods(["fit", "predict_proba"]),
        ],
    }

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Grow the tree on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of every row, multiplied by its
            ``class_weight``. A row weighs that much in every network's loss,
            in clusterers whose ``fit`` takes ``sample_weight`` (KMeans), in
            the held-out accuracy that scores each K and in the split test.
            Rows of weight 0 are left out before anything else, so they
            change nothing. See :doc:`/weights`.

        Returns
        -------
        self
        """
        module_params = self._module_params()
        X, y_enc, classes, weight = self._validate_weighted_training_data(
            X, y, sample_weight
        )
        n_classes = len(classes)
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

        self._grow(X, y_enc, n_classes, module_params, weight)
        self.classes_ = classes
        return self

    @staticmethod
    def _class_counts(y_rows, n_classes):
        return np.bincount(y_rows, minlength=n_classes)

    @staticmethod
    def _row_outcomes(out, y_rows):
        """Per row, whether the class of highest probability is right."""
        return out.argmax(axis=1) == y_rows

    @staticmethod
    def _node_score(node, X, y_enc, rows, weight=None):
        """Training accuracy of a leaf's classifier on its (weighted) rows."""
        E = embed(node.embedder, X, rows=rows) if node.classifier.needs_embedding else None
        proba = node.classifier.predict_proba(X, rows, E)
        correct = proba.argmax(axis=1) == y_enc[rows]
        if weight is None:
            return float(np.mean(correct))
        return float(np.average(correct, weights=weight[rows]))

    # -- predict -------------------------------------------------------------
    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        %(X_samples)s

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        X = self._validate_X(X)
        return self.tree_.predict_proba(X, routing=self.routing)

    def export_text(self, decimals=3):
        """Readable tree: per node depth, size, class counts, the K search
        scores and the chosen K, and each leaf's training accuracy."""
        check_is_fitted(self)
        return self.tree_.export_text(class_names=self.classes_, decimals=decimals)

