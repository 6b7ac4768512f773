"""HierarchicalEmbeddingMoERegressor: the tree of specialists for regression.

The same tree as :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier`
(:class:`~hemoe_sk.hierarchy.HierarchicalMoEBase` grows both): a network
trained on all the data, its embeddings clustered per node, one expert per
cluster, K chosen on held-out rows and a split kept only when a paired test
says it beats the unsplit node. What changes for regression:

* the networks are skorch ``NeuralNetRegressor`` s trained with ``MSELoss`` on
  the standardised targets (``y_mean_``, ``y_scale_``), so one learning rate
  fits every target scale;
* a candidate K is scored by held-out R^2 (averaged over targets; or -MSE,
  -MAE: ``scoring``), and the split test compares the split's and the
  unsplit node's per-row squared (or absolute) errors with a paired
  bootstrap (:func:`hemoe_sk.node.decide_split` on real-valued outcomes);
* ``sample_weight`` weighs every network's MSE loss, the held-out score and
  the split test;
* experts output predictions; soft routing averages the leaves' predictions
  with the path probabilities, hard routing takes the reached leaf's.

This is the regression tree of the HRME paper (hierarchical routing mixture
of experts, arXiv 1903.07756) with embedding-space routers instead of
learned binary gates.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted

from .base import NetRegressorMixin, keep_state_on_error
from .hierarchy import HierarchicalMoEBase
from .nn.inference import embed
from .node import REGRESSION_SCORINGS, regression_outcomes, regression_score

__all__ = ["HierarchicalEmbeddingMoERegressor"]


def _signature_with(init, name, default):
    """``init``'s signature with the keyword-only parameter ``name=default``
    added before its ``**kwargs``."""
    sig = inspect.signature(init)
    *named, kwargs = sig.parameters.values()
    extra = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    return sig.replace(parameters=[*named, extra, kwargs])


class HierarchicalEmbeddingMoERegressor(
    RegressorMixin, NetRegressorMixin, HierarchicalMoEBase
):
    """Tree of regression specialists grown by clustering a network's embeddings.

    Fit trains a network (the *embedder*, an MLP with ``n_outputs`` linear
    outputs and a mean squared error loss) on all the data, embeds the data
    with it (output layer cut off), clusters the embeddings, and trains one
    expert per cluster, starting from the pretrained network. The number of
    clusters K at every node is chosen by held-out R^2 (or ``scoring``) among
    ``n_clusters_grid`` and the unsplit node (K=1); a split is kept only when
    its held-out squared (or absolute) errors beat the unsplit node's (a
    paired bootstrap by default). Each cluster is then treated the same way, down to
    ``max_depth``. Predict routes each sample to a leaf (``routing="hard"``)
    or averages the leaves' predictions with the routing probabilities
    (``routing="soft"``).

    With ``max_depth=0`` the estimator is exactly the embedder network
    trained as a regressor. Targets are standardised for training and
    predictions put back on their scale; ``y`` may be 1-D or 2-D (several
    targets), and :meth:`predict` returns the shape ``y`` had.

    The parameters are those of
    :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier`, read for
    regression; the differences are listed here.

    Parameters
    ----------
    embedder : None, torch ``nn.Module`` subclass or skorch ``NeuralNetRegressor``, \
            default=None
        The network. ``None`` uses :class:`~hemoe_sk.nn.TabularEmbedder`. A module
        class receives ``n_features``, ``n_classes`` (here: the number of
        targets) and any ``embedder__*`` keyword, must return one output per
        target and is trained with ``MSELoss``.
    clusterer, n_clusters_grid, cluster_param_grid, reducer, overlap, \
            outside_share, min_cluster_size, max_depth, validation_size, cv, \
            selection, split_alpha, refit, search_expert, pair_expert, \
            pair_margin, expert_max_epochs
        As in :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier`; the
        held-out splits are drawn unstratified, and a cluster-pair expert
        is kept where it lowers the held-out squared errors.
    split_signal : {"embedding"}, default="embedding"
        The other signals of the classifier group classes; a regressor has
        none, so they raise a ValueError.
    scoring : {"r2", "neg_mean_squared_error", "neg_mean_absolute_error"}, \
            default="r2"
        What the K search reads on the held-out rows. It picks the per-row
        outcome the search and the split test compare (minus the row's
        squared error for ``"r2"`` and ``"neg_mean_squared_error"``, which
        rank candidates alike on the same rows; minus its absolute error for
        ``"neg_mean_absolute_error"``, summed over the targets) and the score
        shown for each K in ``export_text`` and ``tree_`` (R^2, -MSE or -MAE).
        All are computed on the standardised targets (an MSE is divided by
        the target's variance) and averaged over the targets. A scorer
        callable is not accepted: the paired split test compares the split
        and the unsplit node row by row, and a scorer returns one number for
        a whole set of rows, not the per-row outcomes the test needs.
    split_test : {"bootstrap", "margin", "none"}, default="bootstrap"
        ``"bootstrap"``: one-sided paired bootstrap of the per-row differences
        of squared (or absolute, see ``scoring``) error on the held-out rows;
        ``"margin"``: the mean reduction of that error (in standardised
        units) must exceed ``min_gain``; ``"none"``: the best eligible split
        is always kept. ``"mcnemar"`` counts correct classifications and
        raises a ValueError.
    min_gain : "auto" or float, default="auto"
        Mean reduction of the per-row squared (or absolute) error
        (standardised targets) a split must exceed; ``"auto"`` is 0 with the
        bootstrap and one standard error of the unsplit node's mean with
        ``"margin"``.
    routing : {"hard", "soft"}, default="soft"
        The reached leaf's prediction, or the leaves' predictions averaged
        with the product of the routing probabilities along their paths.
    expert : {"finetune", "head"} or regressor, default="finetune"
        ``"finetune"``: a copy of the node's network trained further on the
        cluster (and the child node's embedder); ``"head"``: a linear
        regression head trained on the node's frozen embeddings; a
        scikit-learn regressor is cloned and fit on the embeddings.
        (``"residual"`` and ``"lora"`` are classification-only.)
    expert_rank : int, default=4
        Unused (the classifier's LoRA rank); kept so both share parameters.
    expert_kl : float, default=0.0
        Must be 0: the KL penalty compares class distributions.
    class_weight : None, default=None
        Must be ``None``: a regressor has no classes to weigh; weigh rows
        with ``fit(X, y, sample_weight=...)``.
    refine_epochs : int, default=0
        Must be 0: joint refinement trains the classifier's mixture
        likelihood.
    refine_balance : float, default=0.01
        Unused unless refinement is enabled (it cannot be for regression).
    max_epochs, lr, batch_size, optimizer, early_stopping, patience, lr_schedule, device, \
            n_jobs, random_state, verbose
        As in :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier`.
    **embedder__kwargs
        ``embedder__<name>=value`` keywords passed to the embedder module.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string feature names.
    n_outputs_ : int
        Number of targets.
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        Mean and standard deviation (1 where 0) of the training targets,
        weighted by ``sample_weight``; the networks predict
        ``(y - y_mean_) / y_scale_``.
    y_ndim_ : int
        1 or 2, the dimension of the ``y`` given to fit (and of predictions).
    embedder_ : skorch NeuralNetRegressor
        The root network (the whole model when ``max_depth=0``).
    tree_ : HierarchyTree
        The fitted hierarchy; its nodes' ``train_accuracy`` is their training
        score under ``scoring`` (weighted by ``sample_weight``).
    n_leaves_, depth_, expert_max_epochs_, max_path_epochs_, refine_loss_
        As in :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier`.

    See Also
    --------
    hemoe_sk.MixtureOfExpertsRegressor : flat soft-gated mixture of experts.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.cluster import KMeans
    >>> from hemoe_sk import HierarchicalEmbeddingMoERegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.uniform(-1, 1, size=(300, 2))
    >>> y = np.where(X[:, 0] > 0, 3 * X[:, 1], -2 * X[:, 1] + 1)
    >>> reg = HierarchicalEmbeddingMoERegressor(
    ...     clusterer=KMeans(n_init=3), max_depth=1, min_cluster_size=30,
    ...     max_epochs=40, lr=0.01, random_state=0,
    ... ).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    >>> reg.score(X, y) > 0.8
    True

    Rows weigh their ``sample_weight``, and the search can read the absolute
    error instead:

    >>> reg = HierarchicalEmbeddingMoERegressor(
    ...     clusterer=KMeans(n_init=3), n_clusters_grid=(2,), max_depth=1,
    ...     min_cluster_size=30, embedder__hidden_dims=(16,), max_epochs=40,
    ...     lr=0.01, scoring="neg_mean_absolute_error", random_state=0,
    ... ).fit(X, y, sample_weight=np.where(X[:, 0] > 0, 2.0, 1.0))
    >>> "search (held-out weighted -MAE)" in reg.export_text()
    True
    """

    _regression = True

    _parameter_constraints = {
        **HierarchicalMoEBase._parameter_constraints,
        "expert": [StrOptions({"finetune", "head"}), HasMethods(["fit", "predict"])],
        "scoring": [StrOptions(set(REGRESSION_SCORINGS))],
    }

    def __init__(self, embedder=None, *, scoring="r2", **params):
        super().__init__(embedder, **params)
        self.scoring = scoring

    # scikit-learn reads the parameters from __init__'s signature: the shared
    # ones (listed once, in HierarchicalMoEBase.__init__) and ``scoring``.
    __init__.__signature__ = _signature_with(HierarchicalMoEBase.__init__, "scoring", "r2")

    @keep_state_on_error
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None):
        """Grow the tree on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Real-valued targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of every row. A row weighs that much in every
            network's MSE loss, in the targets' standardisation, in
            clusterers whose ``fit`` takes ``sample_weight`` (KMeans), in the
            held-out score of each K and in the paired split test. Rows of
            weight 0 are left out before anything else, so they change
            nothing. See :doc:`/weights`.

        Returns
        -------
        self
        """
        module_params = self._module_params()
        X, Y, target_info, weight = self._validate_weighted_training_data(
            X, y, sample_weight
        )
        not_for_regression = {
            "split_signal": (self.split_signal != "embedding", "groups classes"),
            "split_test": (self.split_test == "mcnemar", "counts correct labels"),
            "refine_epochs": (self.refine_epochs > 0, "trains a class likelihood"),
            "expert_kl": (self.expert_kl > 0, "compares class distributions"),
            "class_weight": (self.class_weight is not None, "weighs classes"),
        }
        for name, (bad, why) in not_for_regression.items():
            if bad:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} {why}: it is for "
                    "HierarchicalEmbeddingMoEClassifier only, not for regression."
                )
        self._grow(X, Y, Y.shape[1], module_params, weight)
        self._set_target_attributes(target_info)
        return self

    @staticmethod
    def _class_counts(y_rows, n_outputs):
        return np.zeros(0, dtype=np.intp)

    def _row_outcomes(self, out, Y_rows):
        """Per row, minus its squared (or absolute) error summed over the
        targets (:func:`~hemoe_sk.node.regression_outcomes`)."""
        return regression_outcomes(out, Y_rows, self.scoring)

    def _node_score(self, node, X, Y, rows, weight=None):
        """``scoring`` (mean over targets) of a leaf's regressor on its
        (weighted) rows."""
        E = embed(node.embedder, X, rows=rows) if node.classifier.needs_embedding else None
        return regression_score(
            Y[rows], node.classifier.predict_proba(X, rows, E), self.scoring,
            None if weight is None else weight[rows],
        )

    # -- predict -------------------------------------------------------------
    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The shape of the ``y`` the model was fitted on.
        """
        X = self._validate_X(X)
        return self._to_targets(self.tree_.predict_output(X, routing=self.routing))

    def export_text(self, decimals=3):
        """Readable tree: per node depth and size, the K search's held-out
        score (R^2, -MSE or -MAE: ``scoring``) and the chosen K, and each
        leaf's training score."""
        check_is_fitted(self)
        return self.tree_.export_text(
            decimals=decimals, score_name=REGRESSION_SCORINGS[self.scoring]
        )
