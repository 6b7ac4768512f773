"""The trusted-type table: what every supported class saves, and how it is
rebuilt (its *state codec*).

This table is the only place that names classes. A class missing here is
refused by :func:`~hemoe_sk.persistence.save`
(:class:`UnsupportedComponentError`) and by
:func:`~hemoe_sk.persistence.load` (:class:`UntrustedTypeError`). To support
a new torch module class (an embedder), add its name to
:data:`TRUSTED_MODULES`; its constructor arguments become the net's allowed
``module__*`` parameters (see :mod:`._allowlist`).

The table names the modules where each class lives; they are imported (with
:func:`importlib.import_module`) only when ``save`` or ``load`` runs, and
only those fixed modules, never a name read from a file.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from ._errors import UnsupportedComponentError

__all__ = [
    "BY_NAME",
    "CODECS",
    "TRUSTED_MODULES",
    "VALIDATED",
    "VALIDATED_ARRAYS",
    "Codec",
    "codec_of",
    "default_trusted_types",
    "resolve",
    "trusted_name",
    "trusted_table",
]


@dataclass(frozen=True)
class Codec:
    """How one class is saved and rebuilt.

    ``build`` says how:

    ``"estimator"``
        hemoe_sk estimator: ``get_params(deep=False)``, then the listed
        fitted ``arrays`` and ``values``; rebuilt as ``cls(**params)`` and
        ``__setstate__``.
    ``"sklearn"``
        scikit-learn estimator: parameters and the fitted attributes its
        entry in :data:`._allowlist.SKLEARN_STATE` lists; rebuilt as
        ``cls(**params)`` and ``__setstate__``.
    ``"init"``
        plain object rebuilt as ``cls(**{name: attribute for name in init})``;
        ``transient`` attributes (caches, progress bars) are not saved.
    ``"refit"``
        parameters and the ``refit`` arrays; rebuilt as
        ``cls(**params).fit(*arrays)``.
    ``"net"``
        skorch net: the parameters of :data:`._allowlist.NET_PARAMS`, the
        state dicts of its module and criterion, the listed ``values``.
    ``"expert_net"``
        an expert net of :mod:`hemoe_sk.nn.experts`: its parent net, its
        recipe (kind, rank, KL weight, ...) and the weights it owns.
    ``"module"``
        a torch module held outside a net, rebuilt from arguments read from
        its structure.
    ``"random_state"``
        a ``numpy.random.RandomState`` (an estimator parameter).
    ``"class"``
        a class named by a parameter, in the ``role`` it may play
        (``"module"``, ``"criterion"``, ``"optimizer"``, ``"iterator"``,
        ``"dataset"``, ``"split"``); never instantiated by ``load`` itself.
    """

    name: str
    modules: tuple
    attr: str
    build: str
    init: tuple = ()
    arrays: tuple = ()
    values: tuple = ()
    transient: tuple = ()
    refit: tuple = ()
    role: str = ""


#: Fitted attributes every estimator may have (set by ``validate_data``).
VALIDATED = ("n_features_in_",)
VALIDATED_ARRAYS = ("feature_names_in_",)

# Where the skorch glue and the MoE module live (the first importable wins,
# so files stay readable when a class moves between these modules).
_NN_BUILD = ("hemoe_sk.nn.build",)
_NN_TRAINING = ("hemoe_sk.nn.training",)
_NN_EXPERTS = ("hemoe_sk.nn.experts",)

#: Torch module classes a net's ``module`` may name, with the modules they
#: live in. Their constructor arguments are the allowed ``module__*``
#: parameters. Add a new embedder here (one line).
TRUSTED_MODULES = {
    "TabularEmbedder": ("hemoe_sk.nn.recipe",),
    "MLPEmbedder": ("hemoe_sk.nn.modules",),
    "ConvEmbedder": ("hemoe_sk.nn.modules",),
    "AutoEncoder": ("hemoe_sk.nn.modules",),
    "LinearHead": ("hemoe_sk.nn.modules",),
    "DeepMoEEmbedder": ("hemoe_sk.nn.deepmoe",),
    "MixtureOfExpertsModule": ("hemoe_sk.nn.moe", "hemoe_sk.moe"),
    "MixtureOfExpertsRegressionModule": ("hemoe_sk.nn.moe",),
}


def _own(name, modules, build, **kw):
    return Codec(name, tuple(modules), name, build, **kw)


def _ext(name, build, **kw):
    module, _, attr = name.rpartition(".")
    return Codec(name, (module,), attr, build, **kw)


_NODE_FIELDS = (
    "node_id",
    "depth",
    "parent",
    "n_samples",
    "class_counts",
    "embedder",
    "classifier",
    "router",
    "children",
    "search",
    "train_accuracy",
    "epochs",
    "note",
    "pair",
)

#: Fitted values of both hierarchical estimators.
_TREE_VALUES = (
    "embedder_",
    "tree_",
    "n_leaves_",
    "depth_",
    "expert_max_epochs_",
    "max_path_epochs_",
    "refine_loss_",
)

#: scikit-learn classes saved with their allowlisted fitted state.
_SKLEARN = (
    "sklearn.cluster.KMeans",
    "sklearn.cluster.MiniBatchKMeans",
    "sklearn.cluster.AgglomerativeClustering",
    "sklearn.cluster.DBSCAN",
    "sklearn.cluster.HDBSCAN",
    "sklearn.cluster.OPTICS",
    "sklearn.cluster.SpectralClustering",
    "sklearn.mixture.GaussianMixture",
    "sklearn.mixture.BayesianGaussianMixture",
    "sklearn.decomposition.PCA",
    "sklearn.decomposition.TruncatedSVD",
    "sklearn.random_projection.GaussianRandomProjection",
    "sklearn.preprocessing.StandardScaler",
    "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.MaxAbsScaler",
    "sklearn.preprocessing.RobustScaler",
    "sklearn.linear_model.LogisticRegression",
    "sklearn.linear_model.RidgeClassifier",
    "sklearn.linear_model.Ridge",
    "sklearn.linear_model.LinearRegression",
    "sklearn.preprocessing.LabelBinarizer",
    "sklearn.pipeline.Pipeline",
)

_SPLITTER = ("n_splits", "test_size", "train_size", "random_state")

CODECS = (
    # -- hemoe_sk's public estimators -------------------------------------
    _own(
        "HierarchicalEmbeddingMoEClassifier",
        ["hemoe_sk.classifier"],
        "estimator",
        arrays=("classes_",),
        values=_TREE_VALUES,
    ),
    _own(
        "HierarchicalEmbeddingMoERegressor",
        ["hemoe_sk.regressor"],
        "estimator",
        arrays=("y_mean_", "y_scale_"),
        values=("n_outputs_", "y_ndim_", *_TREE_VALUES),
    ),
    _own(
        "MixtureOfExpertsRegressor",
        ["hemoe_sk.moe_regressor"],
        "estimator",
        arrays=("y_mean_", "y_scale_", "expert_usage_"),
        values=("n_outputs_", "y_ndim_", "net_"),
    ),
    _own(
        "MixtureOfExpertsClassifier",
        ["hemoe_sk.moe"],
        "estimator",
        arrays=("classes_", "expert_usage_"),
        values=("net_", "expert_classes_"),
    ),
    _own(
        "FineTunedEnsembleClassifier",
        ["hemoe_sk.baselines"],
        "estimator",
        arrays=("classes_",),
        values=("base_net_", "estimators_", "finetune_epochs_"),
    ),
    _own(
        "DECClusterer",
        ["hemoe_sk.cluster.dec"],
        "estimator",
        arrays=("cluster_centers_", "labels_"),
        values=("autoencoder_", "n_iter_", "history_"),
    ),
    _own(
        "MixtureOfAutoencodersClusterer",
        ["hemoe_sk.cluster.mixae"],
        "estimator",
        arrays=("labels_",),
        values=(
            "autoencoder_",
            "module_",
            "reconstruction_scale_",
            "n_iter_",
            "history_",
            "noise_variance_",
        ),
    ),
    _own(
        "NeighborVoteRouter",
        ["hemoe_sk.cluster.routing"],
        "estimator",
        arrays=("labels_", "cluster_centers_"),
        values=(
            "clusterer_",
            "n_clusters_",
            "n_noise_",
            "n_neighbors_",
            "nn_",
            "training_agreement_",
        ),
    ),
    _own(
        "BalancedKMeans",
        ["hemoe_sk.cluster.signals"],
        "estimator",
        arrays=("cluster_centers_", "labels_"),
        values=("inertia_", "n_iter_", "n_clusters_", "training_agreement_"),
    ),
    _own(
        "ClassGroupClusterer",
        ["hemoe_sk.cluster.signals"],
        "estimator",
        arrays=("classes_", "confusion_", "group_of_class_", "labels_"),
        values=(
            "head_",
            "n_clusters_",
            "class_groups_",
            "n_iter_",
            "training_agreement_",
        ),
    ),
    _own(
        "WithinClassClusterer",
        ["hemoe_sk.cluster.signals"],
        "estimator",
        arrays=(
            "classes_",
            "subcluster_centers_",
            "subcluster_class_",
            "subcluster_group_",
            "labels_",
        ),
        values=("n_clusters_", "training_agreement_"),
    ),
    # -- the fitted tree ----------------------------------------------------
    _own("HierarchyTree", ["hemoe_sk.tree"], "init", init=("nodes", "n_classes")),
    _own(
        "Node", ["hemoe_sk.tree"], "init", init=_NODE_FIELDS, arrays=("class_counts",),
        # A record of the fit (Node.training): pickle keeps it, files do not.
        transient=("training",),
    ),
    _own(
        "Router", ["hemoe_sk.node"], "init", init=("clusterer", "reducer", "n_clusters")
    ),
    _own(
        "PairRouter",
        ["hemoe_sk.node"],
        "init",
        init=("router", "pair", "margin"),
        transient=("n_clusters",),
    ),
    _own(
        "ConstantExpert", ["hemoe_sk.node"], "init", init=("class_index", "n_classes")
    ),
    _own("NetExpert", ["hemoe_sk.node"], "init", init=("net",)),
    _own(
        "SplitDecision",
        ["hemoe_sk.node"],
        "init",
        init=("keep", "gain", "p_value", "min_gain", "test", "n", "wins", "losses"),
    ),
    _own("HeadExpert", ["hemoe_sk.node"], "init", init=("head",)),
    _own("SklearnExpert", ["hemoe_sk.node"], "init", init=("estimator", "n_classes")),
    # -- skorch nets and the callbacks hemoe_sk gives them -----------------
    _own(
        "HemoeNeuralNetClassifier",
        _NN_BUILD,
        "net",
        values=("classes_inferred_", "best_epoch_"),
    ),
    _own("HemoeNeuralNetRegressor", _NN_BUILD, "net", values=("best_epoch_",)),
    _own(
        "ExpertNeuralNetClassifier",
        _NN_EXPERTS,
        "expert_net",
        values=("classes_inferred_", "best_epoch_"),
    ),
    _ext("skorch.NeuralNetClassifier", "net", values=("classes_inferred_",)),
    _ext("skorch.NeuralNetRegressor", "net"),
    _ext("skorch.NeuralNet", "net"),
    _own("FiniteLossGuard", _NN_TRAINING, "init"),
    _own(
        "_EpochProgress",
        ["hemoe_sk.cluster._autoencoder"],
        "init",
        init=("desc",),
        transient=("bar_",),
    ),
    # -- torch modules held outside a net -----------------------------------
    _own("_MixtureOfAutoencoders", ["hemoe_sk.cluster.mixae"], "module"),
    # -- scikit-learn routers, reducers, scalers, experts, splitters --------
    *(_ext(name, "sklearn") for name in _SKLEARN),
    _ext("sklearn.neighbors.NearestNeighbors", "refit", refit=("_fit_X",)),
    _ext(
        "sklearn.model_selection.KFold",
        "init",
        init=("n_splits", "shuffle", "random_state"),
    ),
    _ext(
        "sklearn.model_selection.StratifiedKFold",
        "init",
        init=("n_splits", "shuffle", "random_state"),
    ),
    *(
        _ext(name, "init", init=_SPLITTER, transient=("_default_test_size",))
        for name in (
            "sklearn.model_selection.ShuffleSplit",
            "sklearn.model_selection.StratifiedShuffleSplit",
        )
    ),
    _ext("numpy.random.RandomState", "random_state"),
    # -- classes that parameters name (never instantiated by load) ---------
    *(
        _own(name, modules, "class", role="module")
        for name, modules in TRUSTED_MODULES.items()
    ),
    _own("_ArrayBatches", ["hemoe_sk.cluster._autoencoder"], "class", role="iterator"),
    _ext("torch.utils.data.DataLoader", "class", role="iterator"),
    _ext("skorch.dataset.Dataset", "class", role="dataset"),
    _ext("skorch.dataset.ValidSplit", "class", role="split"),
    *(
        _ext(f"torch.nn.{name}", "class", role="criterion")
        for name in (
            "CrossEntropyLoss",
            "NLLLoss",
            "MSELoss",
            "L1Loss",
            "SmoothL1Loss",
            "HuberLoss",
            "BCEWithLogitsLoss",
        )
    ),
    *(
        _ext(f"torch.optim.{name}", "class", role="optimizer")
        for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam")
    ),
)

BY_NAME = {codec.name: codec for codec in CODECS}

_BY_ATTR = {}
for _codec in CODECS:
    _BY_ATTR.setdefault(_codec.attr, []).append(_codec)
del _codec


@functools.cache
def resolve(codec):
    """The class a codec describes, from its fixed list of modules."""
    for module in codec.modules:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, codec.attr, None)
        if isinstance(cls, type):
            return cls
    raise ImportError(
        f"hemoe_sk.persistence: class {codec.attr} not found in {list(codec.modules)}; "
        "update its entry in hemoe_sk/persistence/_codecs.py."
    )


@functools.lru_cache(maxsize=1024)
def codec_of(cls):
    """The codec of exactly ``cls`` (not of a subclass), or None.

    Only the entries named like ``cls`` are resolved, so saving imports no
    module it does not need. An entry that cannot be resolved is reported
    rather than skipped.
    """
    missing = []
    for codec in _BY_ATTR.get(getattr(cls, "__name__", None), ()):
        try:
            if resolve(codec) is cls:
                return codec
        except ImportError as exc:
            missing.append(str(exc))
    if missing:
        raise UnsupportedComponentError(" ".join(missing))
    return None


def trusted_name(cls):
    """How a user's trusted class is named in a file."""
    return f"{cls.__module__}:{cls.__qualname__}"


def trusted_table(trusted):
    """``{file name: class}`` of the ``trusted=`` argument."""
    table = {}
    for cls in trusted or ():
        if not isinstance(cls, type):
            raise TypeError(
                "trusted must be a list of classes (the objects themselves, "
                f"not names); got {cls!r}."
            )
        table[trusted_name(cls)] = cls
    return table


def default_trusted_types():
    """Names of the classes a file may name without ``trusted=``.

    These are the classes of hemoe_sk's state codecs: its estimators and
    their parts, a fixed list of scikit-learn, skorch and torch classes, and
    the classes parameters may name.

    Returns
    -------
    list of str
        Sorted names, as they appear in model files.

    Examples
    --------
    >>> from hemoe_sk.persistence import default_trusted_types
    >>> "sklearn.cluster.KMeans" in default_trusted_types()
    True
    >>> "torch.nn.Module" in default_trusted_types()
    False
    """
    return sorted(BY_NAME)
