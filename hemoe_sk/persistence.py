"""Safe save/load: explicit state on safetensors, a file that loading never runs.

``pickle``/``joblib`` files run code when they are loaded, so a model file
from an untrusted source is as dangerous as a script. :func:`save` writes an
estimator (fitted or not) to one zip file that holds only data:

``manifest.json``
    The format name and version, the library versions that wrote it, and
    every saved object as a JSON record: its class *name*, its parameters and
    its fitted state; numbers, strings and small containers inline, arrays
    and weights as references to the members below, each member with its
    size, SHA-256 digest and declared dtype and shape.
``arrays/<i>.npy``
    numpy arrays (class labels, k-means and DEC centres, PCA components,
    ...), read back with ``numpy.load(..., allow_pickle=False)``.
``tensors/<i>.safetensors``
    the state dict of one torch module (a net's module or criterion, MixAE's
    mixture module), in the `safetensors <https://huggingface.co/docs/safetensors>`_
    format: a JSON header and raw little-endian tensor bytes, nothing that
    can execute.

What each class saves is written down here, in one table of *state codecs*
(``_CODECS``), rather than discovered by walking objects:

* hemoe_sk's estimators save their parameters (``get_params(deep=False)``)
  and a fixed list of fitted attributes, split into numpy arrays and other
  values (numbers, strings, sub-objects with a codec of their own). Loading
  calls the constructor with the parameters, then ``__setstate__`` with the
  fitted attributes. An attribute that the codec does not list makes
  :func:`save` fail loudly, so a new fitted attribute cannot be silently
  lost: add it to the codec.
* the tree's plain objects (``Node``, ``HierarchyTree``, ``Router``, the
  experts, skorch callbacks) are rebuilt by their constructors from the
  listed arguments.
* skorch nets save their parameters and the state dicts of their modules
  and criteria; loading builds the net, ``initialize()``\\ s it and loads the
  weights with ``load_state_dict(strict=True)``.
* scikit-learn parts come from a closed list of classes (the routers,
  reducers, scalers and linear experts hemoe_sk uses). They save their
  parameters and their attribute dictionary, which may hold only plain data
  (numbers, strings, numeric arrays) or objects that have a codec; loading
  calls the constructor, then ``__setstate__``. ``NearestNeighbors`` keeps
  its training points and is refitted on them (its search tree is a compiled
  object, not data).
* classes named as *parameters* (a module class, an optimizer, a loss, a
  data loader) come from an explicit list too; your own torch module class
  is accepted when you pass it in ``trusted=`` to :func:`save` and
  :func:`load`.

Anything else is refused when saving (:class:`UnsupportedComponentError`,
with a pointer to joblib for files you trust) and when loading
(:class:`UntrustedTypeError`).

Why a table of names and not methods on the estimators: the file format is
this module's concern, and a name-keyed table keeps every class's saved
state visible in one place for review. The table names the modules where each
class lives; they are imported (with :func:`importlib.import_module`) only
when :func:`save` or :func:`load` runs, and only those fixed hemoe_sk
modules, never a name read from a file, so this module imports nothing from
the estimators at import time.

Why ``safetensors`` is a hard dependency: it is the default path of
:func:`save`, :func:`load` and ``hemoe-sk fit``; it is small, has no Python
dependencies and ships binary wheels for every platform torch supports. Its
header is plain JSON, so a weights file cannot carry a pickle payload, which
``torch.load(weights_only=True)`` can only refuse after parsing one.

Loading is bounded and checked before anything is built: at most
:data:`MAX_MEMBERS` members and ``max_size`` uncompressed bytes (sizes
declared by the zip are compared with the manifest's and with the bytes
actually read), member names from a fixed pattern (no paths, no
duplicates), digests, and the dtype and shape declared for every array and
tensor against its header.

Not saved: skorch training histories and optimizer states (a loaded model
predicts exactly as the saved one; ``fit`` retrains from scratch anyway).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import math
import os
import re
import sys
import tempfile
import types
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FORMAT_VERSION",
    "MAX_MEMBERS",
    "MAX_SIZE",
    "ModelFileError",
    "ModelVersionWarning",
    "UnsupportedComponentError",
    "UntrustedTypeError",
    "default_trusted_types",
    "describe",
    "load",
    "save",
]

#: Version of the file layout. 2: explicit state codecs, safetensors weights
#: (hemoe_sk 0.2); 1: generic object graph, torch pickles (hemoe_sk 0.1).
FORMAT_VERSION = 2
_FORMAT_NAME = "hemoe_sk-safe-model"
_MANIFEST = "manifest.json"
_MEMBER_NAME = re.compile(r"(arrays/[0-9]{1,9}\.npy|tensors/[0-9]{1,9}\.safetensors)\Z")

#: Most members a file may have (a zip with millions of entries is refused
#: before any is read).
MAX_MEMBERS = 65_536
#: Default cap on the uncompressed size of a file, in bytes (``load``'s
#: ``max_size``); checked on the sizes the zip declares before reading.
MAX_SIZE = 8 * 2**30
_MAX_MANIFEST = 256 * 2**20
_MAX_TENSOR_HEADER = 100 * 2**20

_CODE_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.LambdaType,
    functools.partial,
)


class ModelFileError(ValueError):
    """The file is not a readable hemoe_sk model (corrupted, truncated,
    tampered with, malicious, or written by another format version)."""


class UntrustedTypeError(TypeError):
    """The file names a class that hemoe_sk's table does not know and that
    was not passed in ``trusted=``."""


class UnsupportedComponentError(TypeError):
    """:func:`save` met an object the safe format cannot express."""


class ModelVersionWarning(UserWarning):
    """The file was written under other library versions than the running
    ones; predictions may differ."""


# --------------------------------------------------------------------------
# The state codecs: what every supported class saves, and how it is rebuilt
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Codec:
    """How one class is saved and rebuilt.

    ``build`` says how:

    ``"estimator"``
        hemoe_sk estimator: ``get_params(deep=False)``, then the listed
        fitted ``arrays`` and ``values``; rebuilt as ``cls(**params)`` and
        ``__setstate__``.
    ``"sklearn"``
        scikit-learn estimator: parameters, and its attribute dictionary,
        data only; rebuilt as ``cls(**params)`` and ``__setstate__``.
    ``"init"``
        plain object rebuilt as ``cls(**{name: attribute for name in init})``;
        ``transient`` attributes (caches, progress bars) are not saved.
    ``"refit"``
        parameters and the ``refit`` arrays; rebuilt as
        ``cls(**params).fit(*arrays)``.
    ``"net"``
        skorch net: parameters, the state dicts of its modules and criteria,
        and the listed ``values``.
    ``"module"``
        a torch module held outside a net: constructor arguments read from
        its structure (see ``_MODULE_ARGS``) and its state dict.
    ``"random_state"``
        a ``numpy.random.RandomState`` (an estimator parameter).
    ``"class"``
        a class named by a parameter (a module class, an optimizer); never
        instantiated by :func:`load` itself.
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


#: Fitted attributes every estimator may have (set by ``validate_data``).
_VALIDATED = ("n_features_in_",)
_VALIDATED_ARRAYS = ("feature_names_in_",)

_HEMOE = "hemoe_sk"
# Where the skorch glue and the MoE module live (the first importable wins,
# so files stay readable when a class moves between these modules).
_NN_BUILD = ("hemoe_sk.nn.build", "hemoe_sk.nn.nets")
_NN_TRAINING = ("hemoe_sk.nn.training", "hemoe_sk.nn.nets")
_NN_MOE = ("hemoe_sk.nn.moe", "hemoe_sk.moe")
_NN_MODULES = ("hemoe_sk.nn.modules",)


def _own(name, modules, build, **kw):
    return _Codec(name, tuple(modules), name, build, **kw)


def _ext(name, build, **kw):
    module, _, attr = name.rpartition(".")
    return _Codec(name, (module,), attr, build, **kw)


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

_CODECS = (
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
        "PairRouter", ["hemoe_sk.node"], "init", init=("router", "pair", "margin"),
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
    _own("HemoeNeuralNetClassifier", _NN_BUILD, "net", values=("classes_inferred_",)),
    _own("HemoeNeuralNetRegressor", _NN_BUILD, "net"),
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
    *(
        _ext(name, "sklearn")
        for name in (
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
    ),
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
        _ext(
            name,
            "init",
            init=("n_splits", "test_size", "train_size", "random_state"),
            transient=("_default_test_size",),
        )
        for name in (
            "sklearn.model_selection.ShuffleSplit",
            "sklearn.model_selection.StratifiedShuffleSplit",
        )
    ),
    _ext("numpy.random.RandomState", "random_state"),
    # -- classes that parameters name (never instantiated by load) ---------
    *(
        _own(name, _NN_MODULES, "class")
        for name in ("MLPEmbedder", "ConvEmbedder", "AutoEncoder", "LinearHead")
    ),
    _own("DeepMoEEmbedder", ["hemoe_sk.nn.deepmoe"], "class"),
    _own("MixtureOfExpertsModule", _NN_MOE, "class"),
    _own("MixtureOfExpertsRegressionModule", ("hemoe_sk.nn.moe",), "class"),
    _own("_ArrayBatches", ["hemoe_sk.cluster._autoencoder"], "class"),
    _ext("skorch.dataset.Dataset", "class"),
    _ext("skorch.dataset.ValidSplit", "class"),
    _ext("torch.utils.data.DataLoader", "class"),
    *(
        _ext(f"torch.nn.{name}", "class")
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
        _ext(f"torch.optim.{name}", "class")
        for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam")
    ),
)

_BY_NAME = {codec.name: codec for codec in _CODECS}


def _resolve(codec):
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
        "update its entry in persistence._CODECS."
    )


_BY_ATTR = {}
for _codec in _CODECS:
    _BY_ATTR.setdefault(_codec.attr, []).append(_codec)
del _codec


def _codec_of(cls):
    """The codec of exactly ``cls`` (not of a subclass), or None.

    Only the entries named like ``cls`` are resolved, so saving imports no
    module it does not need. An entry that cannot be resolved is reported
    rather than skipped.
    """
    missing = []
    for codec in _BY_ATTR.get(cls.__name__, ()):
        try:
            if _resolve(codec) is cls:
                return codec
        except ImportError as exc:
            missing.append(str(exc))
    if missing:
        raise UnsupportedComponentError(" ".join(missing))
    return None


def _trusted_name(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _trusted_table(trusted):
    table = {}
    for cls in trusted or ():
        if not isinstance(cls, type):
            raise TypeError(
                "trusted must be a list of classes (the objects themselves, "
                f"not names); got {cls!r}."
            )
        table[_trusted_name(cls)] = cls
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
    return sorted(_BY_NAME)


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------

_JOBLIB_HINT = (
    "The safe format covers hemoe_sk's estimators, their torch modules and a "
    "fixed list of scikit-learn routers, reducers, scalers and linear models "
    "(hemoe_sk.persistence.default_trusted_types()). For other components use "
    "joblib.dump(estimator, path) and load the file only if you trust it "
    "(joblib/pickle files run code when loaded)."
)


def _versions():
    import sklearn
    import skorch

    # The package is imported before any of its modules, this one included.
    own = getattr(sys.modules.get(_HEMOE), "__version__", "unknown")
    return {
        "hemoe_sk": own,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "skorch": skorch.__version__,
        "numpy": np.__version__,
    }


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:  # pragma: no cover - a hard dependency
        raise ImportError(
            "hemoe_sk.save/load need the 'safetensors' package: pip install "
            "safetensors (it is a dependency of hemoe_sk)."
        ) from None
    return safetensors.torch


def _descr(dtype):
    """JSON form of a numpy dtype as written in ``.npy`` headers."""
    return json.loads(json.dumps(np.lib.format.dtype_to_descr(dtype)))


def _module_device(module):
    p = next(iter([*module.parameters(), *module.buffers()]), None)
    return "cpu" if p is None else str(p.device)


def _linears(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def _mixae_module_args(module):
    """Constructor arguments of a MixAE mixture module, read from its layers."""
    encoder = _linears(module.autoencoders[0].encoder)
    assignment = _linears(module.assignment)
    return {
        "n_autoencoders": len(module.autoencoders),
        "n_features": encoder[0].in_features,
        "hidden_dims": [m.out_features for m in encoder[:-1]],
        "embedding_dim": encoder[-1].out_features,
        "assignment_hidden_dims": [m.out_features for m in assignment[:-1]],
    }


def _mixae_module_build(cls, args):
    autoencoder = _resolve(_BY_NAME["AutoEncoder"])
    n_features = int(args["n_features"])
    hidden = tuple(int(d) for d in args["hidden_dims"])
    code = int(args["embedding_dim"])
    parts = [
        autoencoder(n_features, hidden, code)
        for _ in range(int(args["n_autoencoders"]))
    ]
    return cls(parts, code, tuple(int(d) for d in args["assignment_hidden_dims"]))


#: ``module`` codecs: (constructor arguments from an instance, build from them).
_MODULE_ARGS = {"_MixtureOfAutoencoders": (_mixae_module_args, _mixae_module_build)}


class _Writer:
    """Turns an estimator into manifest records and array/tensor members."""

    def __init__(self, trusted):
        self.trusted = {cls: name for name, cls in trusted.items()}
        self.members = {}  # name -> bytes
        self.member_info = {}  # name -> manifest entry
        self.objects = []
        self.memo = {}  # id(obj) -> index in self.objects
        self.keep = []  # keeps memoised objects alive while saving
        self.classes = set()
        self.used_trusted = set()

    # -- members ---------------------------------------------------------
    def _member(self, prefix, suffix, data, **info):
        name = f"{prefix}/{len(self.members)}.{suffix}"
        self.members[name] = data
        self.member_info[name] = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            **info,
        }
        return name

    def array(self, arr):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return self._member(
            "arrays",
            "npy",
            buf.getvalue(),
            dtype=_descr(arr.dtype),
            shape=list(arr.shape),
        )

    def state_dict(self, module):
        tensors = {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in module.state_dict().items()
        }
        if not tensors:
            return None
        data = _safetensors().save(tensors)
        declared = {
            k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
            for k, v in tensors.items()
        }
        return self._member("tensors", "safetensors", data, tensors=declared)

    # -- values ----------------------------------------------------------
    def class_ref(self, cls, where):
        codec = _codec_of(cls)
        if codec is not None and codec.build == "class":
            self.classes.add(codec.name)
            return {"$class": codec.name}
        name = self.trusted.get(cls)
        if name is not None:
            self.classes.add(name)
            self.used_trusted.add(name)
            return {"$class": name}
        raise UnsupportedComponentError(
            f"{where}: class {cls.__module__}.{cls.__qualname__} is not one the safe "
            "format may name. If it is your own class (e.g. a torch module or "
            f"optimizer), pass trusted=[{cls.__qualname__}] to both hemoe_sk.save() "
            "and hemoe_sk.load(). " + _JOBLIB_HINT
        )

    def encode(self, value, where):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):  # numpy's float64 too: written as a float
            value = float(value)
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.ma.MaskedArray):
            return {
                "$masked": {
                    "data": self.encode(np.ma.getdata(value), where),
                    "mask": self.encode(np.ma.getmaskarray(value), where),
                }
            }
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O":
                return {
                    "$objarray": {
                        "shape": list(value.shape),
                        "items": [
                            self.encode(v, f"{where}[{i}]")
                            for i, v in enumerate(value.ravel().tolist())
                        ],
                    }
                }
            if value.dtype.hasobject:
                raise UnsupportedComponentError(
                    f"{where}: a structured array with object fields. " + _JOBLIB_HINT
                )
            return {"$array": self.array(value)}
        if isinstance(value, np.generic):
            if value.dtype.kind in "biuf":
                return {
                    "$npscalar": [value.dtype.str, self.encode(value.item(), where)]
                }
            if value.dtype.kind in "US":
                return str(value)
            raise UnsupportedComponentError(
                f"{where}: numpy scalars of dtype {value.dtype} are not supported."
            )
        if isinstance(value, tuple):
            return {
                "$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            }
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {
                "$dict": [
                    [self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, type):
            return self.class_ref(value, where)
        if isinstance(value, _CODE_TYPES):
            raise UnsupportedComponentError(
                f"{where}: {value!r} is code (a function, method or partial), which "
                "the safe format cannot store. " + _JOBLIB_HINT
            )
        return {"$ref": self.object(value, where)}

    # -- objects (memoised, so shared nets are written once) --------------
    def object(self, obj, where):
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        codec = _codec_of(type(obj))
        if codec is None or codec.build == "class":
            raise UnsupportedComponentError(
                f"{where}: {type(obj).__module__}.{type(obj).__qualname__} objects are "
                "not supported by the safe format. " + _JOBLIB_HINT
            )
        index = len(self.objects)
        self.memo[key] = index
        self.keep.append(obj)
        self.objects.append(None)
        self.classes.add(codec.name)
        record = {"class": codec.name}
        record.update(getattr(self, "_" + codec.build)(obj, codec, where))
        self.objects[index] = record
        return index

    def _undescribed(self, obj, codec, names, where):
        extra = sorted(set(vars(obj)) - set(names))
        if extra:
            raise UnsupportedComponentError(
                f"{where}: {codec.name} has attributes {extra} that its state codec "
                "does not describe, so saving would lose them. Add them to its entry "
                "in hemoe_sk.persistence._CODECS."
            )

    def _fitted(self, obj, codec, where):
        arrays, values = {}, {}
        for name in (*codec.arrays, *_VALIDATED_ARRAYS):
            if name in vars(obj):
                value = vars(obj)[name]
                if not isinstance(value, np.ndarray):
                    raise UnsupportedComponentError(
                        f"{where}.{name}: expected a numpy array, got "
                        f"{type(value).__name__}; update persistence._CODECS."
                    )
                arrays[name] = self.encode(value, f"{where}.{name}")
        for name in (*codec.values, *_VALIDATED):
            if name in vars(obj):
                values[name] = self.encode(vars(obj)[name], f"{where}.{name}")
        return arrays, values

    def _estimator(self, obj, codec, where):
        params = obj.get_params(deep=False)
        fresh = type(obj)(**params)  # what the constructor rebuilds by itself
        self._undescribed(
            obj,
            codec,
            [
                *vars(fresh),
                *codec.arrays,
                *codec.values,
                *_VALIDATED,
                *_VALIDATED_ARRAYS,
            ],
            where,
        )
        arrays, values = self._fitted(obj, codec, where)
        return {
            "params": {k: self.encode(v, f"{where}.{k}") for k, v in params.items()},
            "arrays": arrays,
            "values": values,
        }

    def _sklearn(self, obj, codec, where):
        params = obj.get_params(deep=False)
        state = {
            k: self.encode(v, f"{where}.{k}")
            for k, v in vars(obj).items()
            if k not in params and k != "_sklearn_version"
        }
        return {
            "params": {k: self.encode(v, f"{where}.{k}") for k, v in params.items()},
            "state": state,
        }

    def _init(self, obj, codec, where):
        self._undescribed(obj, codec, [*codec.init, *codec.transient], where)
        for name in codec.arrays:
            if not isinstance(getattr(obj, name), np.ndarray):
                raise UnsupportedComponentError(
                    f"{where}.{name}: expected a numpy array; update "
                    "persistence._CODECS."
                )
        return {
            "init": {
                k: self.encode(getattr(obj, k), f"{where}.{k}") for k in codec.init
            }
        }

    def _refit(self, obj, codec, where):
        params = obj.get_params(deep=False)
        fitted = all(name in vars(obj) for name in codec.refit)
        return {
            "params": {k: self.encode(v, f"{where}.{k}") for k, v in params.items()},
            "refit": (
                [
                    self.encode(np.asarray(vars(obj)[n]), f"{where}.{n}")
                    for n in codec.refit
                ]
                if fitted
                else None
            ),
        }

    def _net(self, net, codec, where):
        params = {
            k: v for k, v in net.get_params(deep=False).items() if not k.startswith("_")
        }
        record = {
            "params": {k: self.encode(v, f"{where}.{k}") for k, v in params.items()},
            "initialized": bool(getattr(net, "initialized_", False)),
            "state_dicts": {},
            "values": {},
        }
        if record["initialized"]:
            for name in _net_parts(net):
                part = getattr(net, name + "_", None)
                if isinstance(part, torch.nn.Module):
                    member = self.state_dict(part)
                    if member is not None:
                        record["state_dicts"][name] = member
            for name in codec.values:
                if name in vars(net):
                    record["values"][name] = self.encode(
                        vars(net)[name], f"{where}.{name}"
                    )
        return record

    def _module(self, module, codec, where):
        hooks = [
            k
            for k, v in vars(module).items()
            if k.startswith("_") and k.endswith("hooks") and v
        ]
        if hooks:
            raise UnsupportedComponentError(
                f"{where}: the module has {hooks} (functions), which the safe format "
                "cannot store. " + _JOBLIB_HINT
            )
        args, _ = _MODULE_ARGS[codec.name]
        return {
            "args": self.encode(args(module), where),
            "device": _module_device(module),
            "state_dict": self.state_dict(module),
        }

    def _random_state(self, obj, codec, where):
        kind, keys, pos, has_gauss, cached = obj.get_state()
        return {
            "state": [kind, self.encode(keys, where), int(pos), int(has_gauss), cached]
        }


def _net_parts(net):
    """Names of a skorch net's modules and criteria (``module``, ``criterion``)."""
    return [
        *(getattr(net, "_modules", None) or ["module"]),
        *(getattr(net, "_criteria", None) or ["criterion"]),
    ]


def _check_metadata(metadata):
    try:
        text = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be plain JSON data: {exc}") from None
    return json.loads(text)


def save(estimator, path, *, trusted=None, metadata=None):
    """Write ``estimator`` to ``path`` in hemoe_sk's safe format.

    Parameters
    ----------
    estimator : estimator
        A hemoe_sk estimator (fitted or not), or a scikit-learn ``Pipeline``
        of supported steps ending in one.
    path : str, path-like or binary file object
        Destination. A path is written atomically (to a temporary file that
        replaces ``path`` only when complete), so a failed save never leaves
        a truncated model behind.
    trusted : list of classes, optional
        Your own classes that parameters name, e.g. a torch module class
        passed as ``embedder``. The same list must be given to :func:`load`.
    metadata : dict, optional
        JSON data stored beside the model (e.g. feature names), returned by
        :func:`describe`.

    Returns
    -------
    path
        ``path``, for chaining.

    Raises
    ------
    UnsupportedComponentError
        If the estimator holds something the format cannot express (a class
        outside the codec table, a function, a tree-based expert, ...). The
        message says where it is, and suggests ``trusted=`` or joblib.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from hemoe_sk import DECClusterer, load, save
    >>> X = np.random.RandomState(0).rand(40, 4).astype(np.float32)
    >>> dec = DECClusterer(n_clusters=2, hidden_dims=(8,), embedding_dim=2,
    ...                    pretrain_epochs=2, max_iter=5, random_state=0).fit(X)
    >>> buf = io.BytesIO()
    >>> _ = save(dec, buf)
    >>> _ = buf.seek(0)
    >>> bool((load(buf).predict(X) == dec.predict(X)).all())
    True
    """
    writer = _Writer(_trusted_table(trusted))
    root = writer.encode(estimator, type(estimator).__name__)
    codec = _codec_of(type(estimator))
    manifest = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": codec.name if codec else type(estimator).__name__,
        "versions": _versions(),
        "python": sys.version.split()[0],
        "classes": sorted(writer.classes),
        "trusted": sorted(writer.used_trusted),
        "metadata": _check_metadata(metadata or {}),
        "root": root,
        "objects": writer.objects,
        "members": writer.member_info,
    }
    payload = json.dumps(manifest, allow_nan=False, separators=(",", ":")).encode()

    def write(fileobj):
        with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_MANIFEST, payload)
            for name, data in writer.members.items():
                zf.writestr(name, data)

    if hasattr(path, "write"):
        write(path)
        return path
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".hemoe_sk-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _first_line(exc):
    text = str(exc)
    return text.splitlines()[0] if text else ""


def _fail(path, why):
    return ModelFileError(f"Cannot load {path!r} as a hemoe_sk model: {why}")


class _Reader:
    def __init__(self, zf, manifest, trusted, path, device):
        self.zf = zf
        self.manifest = manifest
        self.trusted = trusted
        self.path = path
        self.device = device
        self.objects = manifest.get("objects")
        if not isinstance(self.objects, list):
            raise _fail(path, "the manifest has no object table.")
        self.members = manifest.get("members")
        self.memo = {}
        self.building = set()
        self.cuda_fallback = False

    # -- members ---------------------------------------------------------
    def _member(self, name):
        info = self.members.get(name) if isinstance(name, str) else None
        if not isinstance(info, dict):
            raise _fail(self.path, f"member {name!r} is not listed in the manifest.")
        try:
            with self.zf.open(name) as f:
                data = f.read(int(info["size"]) + 1)
        except KeyError:
            raise _fail(
                self.path, f"member {name!r} is missing (truncated file?)."
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
            raise _fail(self.path, f"member {name!r} is corrupted ({exc}).") from None
        if len(data) != info["size"]:
            raise _fail(
                self.path,
                f"member {name!r} holds {len(data)} bytes where {info['size']} "
                "are declared.",
            )
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise _fail(self.path, f"member {name!r} does not match its checksum.")
        return data, info

    def array(self, name):
        data, info = self._member(name)
        if not name.endswith(".npy"):
            raise _fail(self.path, f"{name!r} is not an array member.")
        buf = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(buf)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = read_header(buf, max_header_size=10_000)
        except Exception as exc:  # noqa: BLE001 - any bad header
            raise _fail(
                self.path, f"array {name!r} has a bad header ({exc})."
            ) from None
        if dtype.hasobject:
            raise _fail(
                self.path,
                f"array {name!r} was refused: it holds Python objects (pickle).",
            )
        if _descr(dtype) != info.get("dtype") or list(shape) != info.get("shape"):
            raise _fail(
                self.path,
                f"array {name!r} is {_descr(dtype)} {list(shape)} but the manifest "
                f"declares {info.get('dtype')} {info.get('shape')}.",
            )
        if buf.tell() + math.prod(shape) * dtype.itemsize != len(data):
            raise _fail(self.path, f"array {name!r} does not match its declared shape.")
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise _fail(self.path, f"array {name!r} was refused ({exc}).") from None

    def tensors(self, name):
        data, info = self._member(name)
        declared = info.get("tensors")
        if not name.endswith(".safetensors") or not isinstance(declared, dict):
            raise _fail(self.path, f"{name!r} is not a tensor member.")
        n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
        try:
            if not 0 < n <= min(len(data) - 8, _MAX_TENSOR_HEADER):
                raise ValueError("bad header length")
            header = json.loads(data[8 : 8 + n])
            header.pop("__metadata__", None)
            tensors = _safetensors().load(data)
        except Exception as exc:  # noqa: BLE001 - pickles, lies, garbage
            raise _fail(
                self.path,
                f"tensor member {name!r} was refused: not a valid safetensors file "
                f"({type(exc).__name__}: {_first_line(exc)}).",
            ) from None
        if set(header) != set(declared) or set(tensors) != set(declared):
            raise _fail(
                self.path, f"{name!r} holds other tensors than the manifest lists."
            )
        for key, t in tensors.items():
            want = declared[key]
            if (
                not isinstance(want, dict)
                or list(t.shape) != want.get("shape")
                or str(t.dtype).removeprefix("torch.") != want.get("dtype")
            ):
                raise _fail(
                    self.path,
                    f"tensor {key!r} in {name!r} is {t.dtype} {list(t.shape)} but the "
                    f"manifest declares {want}.",
                )
        return tensors

    # -- values ----------------------------------------------------------
    def resolve_class(self, name, *, instance):
        codec = _BY_NAME.get(name) if isinstance(name, str) else None
        if codec is not None and (codec.build == "class") != instance:
            return codec, _resolve(codec)
        if not instance and isinstance(name, str) and name in self.trusted:
            return None, self.trusted[name]
        hint = (
            "If it is your own class and you trust it, import it yourself and "
            "pass it in hemoe_sk.load(path, trusted=[...])."
            if not instance
            else "Files may only hold the objects of hemoe_sk's state codecs."
        )
        raise UntrustedTypeError(
            f"{self.path!r} names the class {name!r}, which is not in the allowlist "
            f"of the safe format. Loading never imports classes named by a file. {hint}"
        )

    def decode(self, value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            raise _fail(self.path, f"unexpected value in the manifest: {value!r:.80}")
        ((tag, body),) = value.items()
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                raise _fail(self.path, f"bad float {body!r}.")
            return float(body)
        if tag == "$tuple":
            return tuple(self.decode(v) for v in body)
        if tag == "$dict":
            return {self.decode(k): self.decode(v) for k, v in body}
        if tag == "$array":
            return self.array(body)
        if tag == "$masked":
            return np.ma.MaskedArray(
                self.decode(body["data"]), mask=self.decode(body["mask"])
            )
        if tag == "$objarray":
            items = [self.decode(v) for v in body["items"]]
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            return arr.reshape(tuple(int(s) for s in body["shape"]))
        if tag == "$npscalar":
            dtype, item = body
            dtype = np.dtype(str(dtype))
            if dtype.kind not in "biuf":
                raise _fail(self.path, f"bad numpy scalar dtype {dtype}.")
            return dtype.type(self.decode(item))
        if tag == "$device":
            return torch.device(str(body))
        if tag == "$class":
            return self.resolve_class(body, instance=False)[1]
        if tag == "$ref":
            return self.object(body)
        raise _fail(self.path, f"unknown tag {tag!r} in the manifest.")

    def object(self, index):
        if not isinstance(index, int) or not 0 <= index < len(self.objects):
            raise _fail(self.path, f"bad object reference {index!r}.")
        if index in self.memo:
            return self.memo[index]
        if index in self.building:
            raise _fail(self.path, "an object refers to itself while being built.")
        record = self.objects[index]
        if not isinstance(record, dict):
            raise _fail(self.path, f"object {index} is not a record.")
        codec, cls = self.resolve_class(record.get("class"), instance=True)
        self.building.add(index)
        obj = getattr(self, "_" + codec.build)(index, record, codec, cls)
        self.building.discard(index)
        self.memo[index] = obj
        return obj

    def _dict(self, record, key):
        value = record.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _fail(self.path, f"{key!r} of a {record.get('class')} is not a dict.")
        return value

    def _params(self, record):
        return {k: self.decode(v) for k, v in self._dict(record, "params").items()}

    def _construct(self, cls, kwargs, record):
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise _fail(
                self.path,
                f"{record.get('class')} cannot be rebuilt from the file ({exc}).",
            ) from None

    @staticmethod
    def _setstate(obj, state):
        if callable(getattr(obj, "__setstate__", None)):
            obj.__setstate__(state)
        else:  # pragma: no cover - every Python >= 3.11 object has one
            obj.__dict__.update(state)

    def _estimator(self, index, record, codec, cls):
        obj = self._construct(cls, self._params(record), record)
        self.memo[index] = obj
        arrays = self._dict(record, "arrays")
        values = self._dict(record, "values")
        state = {}
        for name, value in arrays.items():
            if name not in (*codec.arrays, *_VALIDATED_ARRAYS):
                raise _fail(
                    self.path, f"{name!r} is not a fitted array of {codec.name}."
                )
            state[name] = self.decode(value)
            if not isinstance(state[name], np.ndarray):
                raise _fail(self.path, f"{codec.name}.{name} is not an array.")
        for name, value in values.items():
            if name not in (*codec.values, *_VALIDATED):
                raise _fail(
                    self.path,
                    f"attribute {name!r} is not part of {codec.name}'s saved state "
                    "(it would replace a method or an attribute it does not save).",
                )
            state[name] = self.decode(value)
        if state:
            self._setstate(obj, {**obj.__dict__, **state})
        return obj

    def _sklearn(self, index, record, codec, cls):
        import sklearn

        obj = self._construct(cls, self._params(record), record)
        self.memo[index] = obj
        state = {}
        for name, value in self._dict(record, "state").items():
            shadowed = getattr(cls, name, None)
            if (
                name.startswith("__")
                or callable(shadowed)
                or isinstance(shadowed, property)
            ):
                raise _fail(
                    self.path,
                    f"attribute {name!r} of {codec.name} would replace a method or "
                    "special attribute.",
                )
            state[name] = self.decode(value)
        self._setstate(
            obj, {**obj.__dict__, **state, "_sklearn_version": sklearn.__version__}
        )
        return obj

    def _init(self, index, record, codec, cls):
        init = self._dict(record, "init")
        if set(init) != set(codec.init):
            raise _fail(
                self.path,
                f"{codec.name} needs exactly {list(codec.init)}; got {list(init)}.",
            )
        kwargs = {k: self.decode(v) for k, v in init.items()}
        for name in codec.arrays:
            if not isinstance(kwargs[name], np.ndarray):
                raise _fail(self.path, f"{codec.name}.{name} is not an array.")
        return self._construct(cls, kwargs, record)

    def _refit(self, index, record, codec, cls):
        obj = self._construct(cls, self._params(record), record)
        arrays = record.get("refit")
        if arrays is not None:
            arrays = [self.decode(a) for a in arrays]
            if len(arrays) != len(codec.refit) or not all(
                isinstance(a, np.ndarray) for a in arrays
            ):
                raise _fail(
                    self.path, f"{codec.name} needs {list(codec.refit)} as arrays."
                )
            obj.fit(*arrays)
        return obj

    def _target_device(self, saved):
        if self.device is not None:
            return str(self.device)
        saved = "cpu" if saved is None else str(saved)
        if saved.startswith("cuda") and not torch.cuda.is_available():
            self.cuda_fallback = True
            return "cpu"
        if saved == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return saved

    def _load_weights(self, part, member, what):
        state = self.tensors(member)
        try:
            part.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise _fail(
                self.path, f"weights do not fit the {what} ({_first_line(exc)})."
            ) from None
        part.eval()

    def _probe_module(self, net, member):
        """Refuse module parameters that do not fit the saved weights before
        allocating anything: the module is first built on torch's ``meta``
        device (shapes only, no memory), so a file asking for a huge network
        cannot exhaust memory. Trusted user classes are not probed."""
        module_cls = net.module
        codec = _codec_of(module_cls) if isinstance(module_cls, type) else None
        if codec is None:
            return
        declared = {}
        if member is not None:
            entry = self.members.get(member)
            tensors = entry.get("tensors") if isinstance(entry, dict) else None
            if not isinstance(tensors, dict):
                raise _fail(self.path, f"{member!r} is not a tensor member.")
            declared = {
                k: v.get("shape") if isinstance(v, dict) else None
                for k, v in tensors.items()
            }
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probe = module_cls(**net.get_params_for("module"))
        except (TypeError, ValueError) as exc:
            raise _fail(
                self.path, f"{codec.name} cannot be built from the file ({exc})."
            ) from None
        expected = {k: list(v.shape) for k, v in probe.state_dict().items()}
        if expected != declared:
            wrong = sorted(set(expected) ^ set(declared)) or [
                k for k in expected if expected[k] != declared[k]
            ]
            raise _fail(
                self.path,
                f"weights do not fit the module {codec.name} built from the file's "
                f"parameters (first differences: {wrong[:3]}).",
            )

    def _net(self, index, record, codec, cls):
        params = self._params(record)
        device = self._target_device(params.get("device"))
        params["device"] = device
        net = self._construct(cls, params, record)
        self.memo[index] = net
        if not record.get("initialized"):
            return net
        saved = self._dict(record, "state_dicts")
        self._probe_module(net, saved.get("module"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net.initialize()
        for name in _net_parts(net):
            part = getattr(net, name + "_", None)
            if not isinstance(part, torch.nn.Module):
                continue
            if name in saved:
                self._load_weights(part, saved[name], name)
            elif part.state_dict():
                raise _fail(self.path, f"the net's {name} has no saved weights.")
        unknown = set(saved) - set(_net_parts(net))
        if unknown:
            raise _fail(self.path, f"the net has no parts {sorted(unknown)}.")
        for name, value in self._dict(record, "values").items():
            if name not in codec.values:
                raise _fail(self.path, f"{name!r} is not part of {codec.name}'s state.")
            setattr(net, name, self.decode(value))
        return net

    def _module(self, index, record, codec, cls):
        args = self.decode(record.get("args"))
        if not isinstance(args, dict):
            raise _fail(self.path, f"{codec.name} has no constructor arguments.")
        _, build = _MODULE_ARGS[codec.name]
        with torch.random.fork_rng(devices=[]):
            try:
                module = build(cls, args)
            except (KeyError, TypeError, ValueError) as exc:
                raise _fail(
                    self.path, f"{codec.name} cannot be rebuilt ({exc})."
                ) from None
        if record.get("state_dict") is not None:
            self._load_weights(module, record["state_dict"], codec.name)
        return module.to(self._target_device(record.get("device")))

    def _random_state(self, index, record, codec, cls):
        try:
            kind, keys, pos, has_gauss, cached = record["state"]
            rs = np.random.RandomState()
            rs.set_state(
                (str(kind), self.decode(keys), int(pos), int(has_gauss), float(cached))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(self.path, f"bad RandomState ({exc}).") from None
        return rs


def _shown(path):
    shown = (
        path
        if isinstance(path, (str, os.PathLike))
        else getattr(path, "name", "<file>")
    )
    return os.fspath(shown) if isinstance(shown, os.PathLike) else shown


def _open(path, max_size=None):
    """(zipfile, manifest, shown name) of ``path``, after every structural
    check; a clear :class:`ModelFileError` otherwise."""
    shown = _shown(path)
    max_size = MAX_SIZE if max_size is None else int(max_size)
    try:
        zf = zipfile.ZipFile(path, "r")
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _fail(
            shown,
            "not a hemoe_sk model file, or the file is truncated or corrupted "
            f"({exc}).",
        ) from None
    try:
        manifest = _check_archive(zf, shown, max_size)
    except BaseException:
        zf.close()
        raise
    return zf, manifest, shown


def _check_archive(zf, shown, max_size):
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _fail(shown, f"it has {len(infos)} members (at most {MAX_MEMBERS}).")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise _fail(shown, f"duplicate members {dupes[:5]}.")
    total = sum(i.file_size for i in infos)
    if total > max_size:
        raise _fail(
            shown,
            f"it would uncompress to {total} bytes, more than max_size={max_size} "
            "(pass a larger max_size to load() if you expect a model this big).",
        )
    if _MANIFEST not in names:
        raise _fail(shown, f"it has no {_MANIFEST} (not written by hemoe_sk.save).")
    info = zf.getinfo(_MANIFEST)
    if info.file_size > _MAX_MANIFEST:
        raise _fail(shown, f"its {_MANIFEST} is larger than {_MAX_MANIFEST} bytes.")
    try:
        with zf.open(info) as f:
            raw = f.read(info.file_size + 1)
        manifest = json.loads(raw.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - any bad manifest
        raise _fail(shown, f"the file is truncated or corrupted ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_NAME:
        raise _fail(shown, "it was not written by hemoe_sk.save.")
    version = manifest.get("format_version")
    if version == 1:
        raise _fail(
            shown,
            "it was written by hemoe_sk 0.1 (format version 1), which this version no "
            "longer reads: format 1 could name any torch.nn or torch.optim class. Load "
            "it under hemoe_sk 0.1 and save it with joblib (a file you trust), or "
            "refit the model and save it again.",
        )
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _fail(
            shown,
            f"it uses format version {version!r}; this hemoe_sk reads up to "
            f"{FORMAT_VERSION}. Upgrade hemoe_sk.",
        )
    if version != FORMAT_VERSION:
        raise _fail(shown, f"unknown format version {version!r}.")
    for info in infos:
        if info.filename != _MANIFEST and not _MEMBER_NAME.match(info.filename):
            raise _fail(shown, f"unexpected member name {info.filename!r}.")
        if info.flag_bits & 0x1:
            raise _fail(shown, f"member {info.filename!r} is encrypted.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _fail(
                shown, f"member {info.filename!r} uses an unsupported compression."
            )
    members = manifest.get("members")
    if not isinstance(members, dict):
        raise _fail(shown, "the manifest has no member table.")
    in_zip = {i.filename: i for i in infos if i.filename != _MANIFEST}
    unlisted = sorted(set(in_zip) - set(members))
    if unlisted:
        raise _fail(shown, f"members {unlisted[:5]} are not listed in the manifest.")
    for name, entry in members.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            raise _fail(shown, f"the manifest entry of {name!r} is malformed.")
        if name in in_zip and in_zip[name].file_size != entry["size"]:
            raise _fail(
                shown,
                f"member {name!r} declares {in_zip[name].file_size} bytes in the zip "
                f"and {entry['size']} in the manifest.",
            )
    return manifest


def describe(path):
    """What a model file holds, without building anything from it.

    Parameters
    ----------
    path : str, path-like or binary file object

    Returns
    -------
    dict
        ``estimator`` (class name), ``format_version``, ``versions`` (of the
        libraries that wrote it), ``types`` (every class it names),
        ``untrusted_types`` (those outside :func:`default_trusted_types`,
        which :func:`load` needs in ``trusted=``), ``metadata`` (what
        :func:`save` was given), ``n_arrays``, ``n_tensor_files`` and
        ``size`` (uncompressed bytes of the members).
    """
    zf, manifest, _ = _open(path)
    zf.close()
    classes = [t for t in manifest.get("classes", []) if isinstance(t, str)]
    members = manifest.get("members", {})
    return {
        "estimator": manifest.get("estimator"),
        "format_version": manifest.get("format_version"),
        "versions": manifest.get("versions", {}),
        "types": classes,
        "untrusted_types": [t for t in classes if t not in _BY_NAME],
        "metadata": manifest.get("metadata", {}),
        "n_arrays": sum(n.endswith(".npy") for n in members),
        "n_tensor_files": sum(n.endswith(".safetensors") for n in members),
        "size": sum(e.get("size", 0) for e in members.values() if isinstance(e, dict)),
    }


def load(path, *, trusted=None, device=None, max_size=None):
    """Read an estimator written by :func:`save`.

    Nothing in the file is executed: classes come from hemoe_sk's table of
    state codecs (:func:`default_trusted_types`) plus ``trusted``, arrays
    are read with ``allow_pickle=False`` and weights from safetensors files.

    Parameters
    ----------
    path : str, path-like or binary file object
    trusted : list of classes, optional
        Your own classes the file names (the ones given to :func:`save`).
    device : str, optional
        Torch device for every net. By default each net goes back to the
        device it was saved from; a CUDA net on a machine without CUDA is
        put on the CPU with a warning.
    max_size : int, optional
        Largest uncompressed size accepted, in bytes; default
        :data:`MAX_SIZE`. Guards against zip bombs.

    Returns
    -------
    estimator

    Raises
    ------
    ModelFileError
        The file is truncated, corrupted, tampered with (a pickle payload, a
        lying header, a path in a member name, a size that does not match),
        too large, or from another format version.
    UntrustedTypeError
        The file names a class outside the codec table and ``trusted``.

    Warns
    -----
    ModelVersionWarning
        When the file was written under other versions of hemoe_sk, torch,
        scikit-learn, skorch or numpy.
    RuntimeWarning
        When CUDA weights are loaded on the CPU.
    """
    if (
        device is not None
        and str(device).startswith("cuda")
        and not torch.cuda.is_available()
    ):
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    trusted = _trusted_table(trusted)
    zf, manifest, shown = _open(path, max_size)
    with zf:
        saved = manifest.get("versions") or {}
        running = _versions()
        differ = {k: (saved.get(k), v) for k, v in running.items() if saved.get(k) != v}
        if differ:
            listed = ", ".join(
                f"{k} {a} (file) vs {b} (now)" for k, (a, b) in differ.items()
            )
            warnings.warn(
                f"{shown!r} was saved with other library versions: {listed}. The model "
                "loads, but its predictions may differ; re-save it under the current "
                "versions once checked.",
                ModelVersionWarning,
                stacklevel=2,
            )
        reader = _Reader(zf, manifest, trusted, shown, device)
        try:
            estimator = reader.decode(manifest.get("root"))
        except (ModelFileError, UntrustedTypeError):
            raise
        except RecursionError:
            raise _fail(shown, "the object graph is nested too deeply.") from None
        except Exception as exc:  # noqa: BLE001 - never a deep traceback
            raise _fail(shown, f"{type(exc).__name__}: {_first_line(exc)}") from None
        if reader.cuda_fallback:
            warnings.warn(
                f"{shown!r} holds networks trained on CUDA, which is not available "
                "here; they were loaded on the CPU.",
                RuntimeWarning,
                stacklevel=2,
            )
    return estimator
