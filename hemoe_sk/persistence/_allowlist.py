"""What a file may set: net parameters, module arguments, scikit-learn state.

One place for every allowlist, used by both the writer (a model that the
lists do not cover is refused when *saving*, so no file is written that
loading would refuse) and the reader (anything else in a file is refused).

* :data:`NET_PARAMS`: a skorch net's parameters. ``module`` must be a
  module class of :data:`._codecs.TRUSTED_MODULES` (or a class passed in
  ``trusted=``), ``module__*`` its constructor arguments with plain values,
  ``optimizer__*``/``criterion__*``/``iterator_*__*`` a few numeric settings;
  the training settings hemoe_sk sets (``train_split=None``, its callbacks,
  ``compile=False``, the recipe's ``validation_fraction``, ``patience`` and
  ``lr_schedule`` by name) and nothing else. skorch's ``compile__*`` options, data
  loader workers, a module *instance* in ``module``: all refused.
* :data:`NET_VALUES`: a net's fitted values (``classes_inferred_``,
  ``best_epoch_``).
* :data:`INDEX_ARGS`: module arguments that list column indices.
* :data:`SKLEARN_STATE`: per scikit-learn class, its fitted attributes.
* :func:`check_device`: ``cpu``, ``cuda[:i]``, ``mps`` (never ``meta``).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import re

import numpy as np

from ._codecs import codec_of
from ._errors import MAX_N_JOBS

__all__ = [
    "INDEX_ARGS",
    "MAX_INDEX_ITEMS",
    "NET_CALLBACKS",
    "NET_PARAMS",
    "NET_SUBPARAMS",
    "NET_VALUES",
    "SKLEARN_STATE",
    "check_device",
    "check_module_args",
    "check_n_jobs",
    "check_net_params",
    "module_arg_names",
    "plain",
]

_DEVICE = re.compile(r"(cpu|mps|cuda(:[0-9]{1,2})?)\Z")

#: Most items and nesting of a plain value (module arguments, settings).
_MAX_ITEMS = 4096
_MAX_NESTING = 4


def check_device(device, *, allow_auto=False, allow_none=False):
    """None if ``device`` may appear in a file, else why not."""
    if device is None:
        return None if allow_none else "no device"
    text = str(device)
    if allow_auto and text == "auto":
        return None
    if not isinstance(device, str) and type(device).__name__ != "device":
        return f"device {device!r} is not a device name"
    if not _DEVICE.match(text):
        return f"device {text!r} is not one of cpu, cuda[:i], mps"
    return None


def plain(value, depth=0):
    """True for JSON-like data: numbers, strings, None, and short lists or
    tuples of those (no arrays, objects or classes)."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, np.ndarray):
        return True
    if isinstance(value, (list, tuple)):
        return (
            depth < _MAX_NESTING
            and len(value) <= _MAX_ITEMS
            and all(plain(v, depth + 1) for v in value)
        )
    return False


def _finite_positive(value):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _int_in(lo, hi):
    def check(value):
        return (
            isinstance(value, numbers.Integral)
            and not isinstance(value, bool)
            and lo <= value <= hi
        )

    return check


def _real_in(value, lo, hi):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and lo <= value <= hi
    )


def _lr_schedules():
    """The names of hemoe_sk's learning-rate schedules (a net's
    ``lr_schedule`` is looked up there by name, never called from a file)."""
    from hemoe_sk.nn.build import LR_SCHEDULES

    return tuple(LR_SCHEDULES)


def _class_of_role(role):
    def check(value, trusted):
        if not isinstance(value, type):
            return False
        if value in trusted:
            return True
        codec = codec_of(value)
        return codec is not None and codec.build == "class" and codec.role == role

    check.needs_trusted = True
    return check


#: The skorch callbacks a net may carry (each also needs an ``init`` codec in
#: ``_codecs.CODECS``). Extend here.
NET_CALLBACKS = ("FiniteLossGuard", "_EpochProgress")


def _callbacks(value):
    if not isinstance(value, (list, tuple)) or len(value) > 16:
        return False
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            return False
        name, callback = item
        codec = codec_of(type(callback))
        if not isinstance(name, str) or codec is None:
            return False
        if codec.name not in NET_CALLBACKS:
            return False
    return True


def _classes(value):
    if value is None:
        return True
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind in "biufUS"
    return isinstance(value, (list, tuple)) and plain(value)


#: A skorch net's parameters and what each may hold. Extend here.
NET_PARAMS = {
    "module": _class_of_role("module"),
    "criterion": _class_of_role("criterion"),
    "optimizer": _class_of_role("optimizer"),
    "iterator_train": _class_of_role("iterator"),
    "iterator_valid": _class_of_role("iterator"),
    "dataset": _class_of_role("dataset"),
    "lr": _finite_positive,
    "max_epochs": _int_in(0, 10**7),
    "batch_size": lambda v: v == -1 or v == "auto" or _int_in(1, 2**31)(v),
    "train_split": lambda v: v is None,
    # the training recipe of hemoe_sk's nets (nn.build._RecipeMixin)
    "validation_fraction": lambda v: _real_in(v, 0.0, 1.0) and v < 1,
    "patience": lambda v: v is None or _int_in(1, 10**7)(v),
    "lr_schedule": lambda v: v is None or (isinstance(v, str) and v in _lr_schedules()),
    "callbacks": _callbacks,
    "predict_nonlinearity": lambda v: v is None or v == "auto",
    "warm_start": lambda v: isinstance(v, bool),
    "verbose": _int_in(0, 10),
    "device": lambda v: check_device(v, allow_none=True) is None,
    "compile": lambda v: v is False,
    "use_caching": lambda v: v == "auto" or isinstance(v, bool),
    "torch_load_kwargs": lambda v: v is None,
    "classes": _classes,
}


#: A net's fitted values a file may set (``values`` of its codec in
#: ``_codecs.CODECS``), and what each may hold. Extend here.
NET_VALUES = {
    "classes_inferred_": _classes,
    "best_epoch_": lambda v: v is None or _int_in(1, 10**7)(v),
}

#: Module arguments that are lists of column indices, per module class: not
#: subject to :func:`plain`'s item limit (a table may have more columns), but
#: to :data:`MAX_INDEX_ITEMS` plain integers; the reader bounds them further by
#: the module's ``n_features``, checked against the real tensors
#: (``_modules.ARG_CHECKS``).
INDEX_ARGS = {"TabularEmbedder": ("numerical_features",)}
MAX_INDEX_ITEMS = 2**20


def _indices(value):
    return value is None or (
        isinstance(value, (list, tuple))
        and len(value) <= MAX_INDEX_ITEMS
        and all(_int_in(0, 2**40)(v) for v in value)
    )


def _numbers(value):
    if isinstance(value, (list, tuple)):
        return len(value) <= 4 and all(_numbers(v) for v in value)
    return isinstance(value, numbers.Real) and math.isfinite(value)


#: ``prefix__name`` parameters: the names allowed after each prefix, and
#: what they may hold (``module__*`` is checked against the module class).
NET_SUBPARAMS = {
    "optimizer": (
        {
            "lr", "momentum", "weight_decay", "betas", "eps", "nesterov",
            "dampening", "amsgrad", "alpha", "centered", "lr_decay",
            "initial_accumulator_value", "momentum_decay", "decoupled_weight_decay",
        },
        _numbers,
    ),
    "criterion": (
        {"reduction", "label_smoothing", "ignore_index", "delta", "beta"},
        lambda v: v in ("mean", "sum", "none") or _numbers(v),
    ),
    "iterator_train": ({"shuffle"}, lambda v: isinstance(v, bool)),
    "iterator_valid": ({"shuffle"}, lambda v: isinstance(v, bool)),
}


@functools.lru_cache(maxsize=256)
def module_arg_names(module_cls):
    """The constructor arguments of a module class (``module__*`` names),
    those its ``**kwargs`` forwards to its bases included, and whether the
    most-derived constructor takes ``**kwargs``."""
    names, var_kw = set(), None
    for klass in module_cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass.__module__.startswith("torch"):
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins
            continue
        names |= {
            n
            for n, p in params.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        var_kw = kw if var_kw is None else var_kw
        if not kw:
            break  # its bases' arguments are not reachable from here
    return names, bool(var_kw)


def check_module_args(module_cls, args, *, trusted_cls=False):
    """Why ``args`` (``module__*`` values, by argument name) cannot build
    ``module_cls``, or None."""
    names, var_kw = module_arg_names(module_cls)
    indices = (  # the table's own class, not a trusted one of the same name
        INDEX_ARGS.get(module_cls.__name__, ()) if codec_of(module_cls) else ()
    )
    for name, value in args.items():
        if name not in names and not (var_kw and trusted_cls):
            return f"{module_cls.__name__} has no argument {name!r}"
        if name in indices:
            if not _indices(value):
                return f"module__{name} must be a list of column indices"
            continue
        if not plain(value):
            return f"module__{name} must be plain data, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"module__{name} is not finite"
    return None


def check_net_params(params, trusted):
    """Why a net's parameters are outside :data:`NET_PARAMS`, or None.

    ``trusted`` are the classes passed in ``trusted=``.
    """
    trusted = set(trusted)
    module_cls = params.get("module")
    module_args = {}
    for key, value in params.items():
        prefix, sep, sub = key.partition("__")
        if not sep:
            check = NET_PARAMS.get(key)
            if check is None:
                return f"the net parameter {key!r} is not allowed"
            ok = (
                check(value, trusted)
                if getattr(check, "needs_trusted", False)
                else check(value)
            )
            if not ok:
                shown = value.__name__ if isinstance(value, type) else repr(value)
                return f"the net parameter {key}={shown:.80} is not allowed"
        elif prefix == "module":
            module_args[sub] = value
        else:
            names, check = NET_SUBPARAMS.get(prefix, ((), None))
            if sub not in names or not check(value):
                return f"the net parameter {key}={value!r:.80} is not allowed"
    if module_args:
        if not isinstance(module_cls, type):
            return "module__* parameters without a module class"
        why = check_module_args(
            module_cls, module_args, trusted_cls=module_cls in trusted
        )
        if why:
            return why
    return None


def check_n_jobs(params):
    """Why an ``n_jobs`` parameter would start a thread storm, or None."""
    n_jobs = params.get("n_jobs")
    if n_jobs is None:
        return None
    if (
        isinstance(n_jobs, bool)
        or not isinstance(n_jobs, numbers.Integral)
        or abs(n_jobs) > MAX_N_JOBS
    ):
        return f"n_jobs={n_jobs!r} (at most {MAX_N_JOBS})"
    return None


_V = ("n_features_in_", "feature_names_in_")
_KMEANS = ("_algorithm", "_n_features_out", "_n_init", "_n_threads", "_tol",
           "cluster_centers_", "inertia_", "labels_", "n_iter_")

#: Per scikit-learn class, the fitted attributes a file may restore. Private
#: ones are checked or recomputed by the reader (``_n_threads`` is always
#: recomputed for this machine).
SKLEARN_STATE = {
    "sklearn.cluster.KMeans": (*_KMEANS, *_V),
    "sklearn.cluster.MiniBatchKMeans": (
        *_KMEANS, "_batch_size", "_counts", "_ewa_inertia", "_ewa_inertia_min",
        "_init_size", "_n_since_last_reassign", "_no_improvement", "n_steps_", *_V,
    ),
    "sklearn.cluster.AgglomerativeClustering": (
        "children_", "distances_", "labels_", "n_clusters_",
        "n_connected_components_", "n_leaves_", *_V,
    ),
    "sklearn.cluster.DBSCAN": ("components_", "core_sample_indices_", "labels_", *_V),
    "sklearn.cluster.HDBSCAN": (
        "_metric_params", "_min_samples", "_raw_data", "_single_linkage_tree_",
        "centroids_", "labels_", "medoids_", "probabilities_", *_V,
    ),
    "sklearn.cluster.OPTICS": (
        "cluster_hierarchy_", "core_distances_", "labels_", "ordering_",
        "predecessor_", "reachability_", *_V,
    ),
    "sklearn.cluster.SpectralClustering": ("affinity_matrix_", "labels_", *_V),
    "sklearn.mixture.GaussianMixture": (
        "converged_", "covariances_", "lower_bound_", "lower_bounds_", "means_",
        "n_iter_", "precisions_", "precisions_cholesky_", "weights_", *_V,
    ),
    "sklearn.mixture.BayesianGaussianMixture": (
        "converged_", "covariance_prior_", "covariances_", "degrees_of_freedom_",
        "degrees_of_freedom_prior_", "lower_bound_", "lower_bounds_",
        "mean_precision_", "mean_precision_prior_", "mean_prior_", "means_",
        "n_iter_", "precisions_", "precisions_cholesky_", "weight_concentration_",
        "weight_concentration_prior_", "weights_", *_V,
    ),
    "sklearn.decomposition.PCA": (
        "_fit_svd_solver", "components_", "explained_variance_",
        "explained_variance_ratio_", "mean_", "n_components_", "n_samples_",
        "noise_variance_", "singular_values_", *_V,
    ),
    "sklearn.decomposition.TruncatedSVD": (
        "components_", "explained_variance_", "explained_variance_ratio_",
        "singular_values_", *_V,
    ),
    "sklearn.random_projection.GaussianRandomProjection": (
        "_n_features_out", "components_", "n_components_", *_V,
    ),
    "sklearn.preprocessing.StandardScaler": (
        "mean_", "n_samples_seen_", "scale_", "var_", *_V,
    ),
    "sklearn.preprocessing.MinMaxScaler": (
        "data_max_", "data_min_", "data_range_", "min_", "n_samples_seen_",
        "scale_", *_V,
    ),
    "sklearn.preprocessing.MaxAbsScaler": ("max_abs_", "n_samples_seen_", "scale_", *_V),
    "sklearn.preprocessing.RobustScaler": ("center_", "scale_", *_V),
    "sklearn.linear_model.LogisticRegression": (
        "classes_", "coef_", "intercept_", "n_iter_", *_V,
    ),
    "sklearn.linear_model.RidgeClassifier": (
        "_label_binarizer", "classes_", "coef_", "intercept_", "n_iter_", "solver_",
        *_V,
    ),
    "sklearn.linear_model.Ridge": ("coef_", "intercept_", "n_iter_", "solver_", *_V),
    "sklearn.linear_model.LinearRegression": (
        "coef_", "intercept_", "rank_", "singular_", *_V,
    ),
    "sklearn.preprocessing.LabelBinarizer": ("classes_", "sparse_input_", "y_type_"),
    "sklearn.pipeline.Pipeline": (),
}
