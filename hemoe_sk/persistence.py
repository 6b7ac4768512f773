"""Safe save/load: a model file that loading never executes.

``pickle``/``joblib`` files run code when they are loaded, so a model file
from an untrusted source is as dangerous as a script. :func:`save` writes a
fitted (or unfitted) estimator to a single zip file that holds only data:

``manifest.json``
    The object graph in JSON: parameters, class labels, tree structure,
    scalars, and *names* of classes; library versions; a SHA-256 digest of
    every other member.
``arrays/<i>.npy``
    numpy arrays (k-means centres, DEC centres, class counts, ...), written
    with :func:`numpy.save` and read with ``allow_pickle=False``.
``tensors/<i>.pt``
    torch state dicts of the skorch nets' modules and criteria (and the
    parameters of plain torch modules), written with :func:`torch.save` and
    read with ``torch.load(weights_only=True)``.

:func:`load` re-creates classes only from an allowlist: every class defined
in hemoe_sk, a fixed set of scikit-learn, skorch and torch classes
(:func:`default_trusted_types`), and the classes the caller passes as
``trusted=``. A class name in the file is looked up in that
allowlist, never imported. Objects are rebuilt with ``cls.__new__`` and their
attribute dictionary (data only); skorch nets are rebuilt from their
parameters with ``initialize()`` and get their weights with
``load_state_dict``. Components the format cannot express (a decision tree
expert, a lambda, a custom callback, ...) are refused when saving, with a
pointer to :mod:`joblib` for files you trust.

Not saved: skorch training histories and optimizer states (a loaded model
predicts exactly as the saved one; ``fit`` retrains from scratch anyway).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import types
import warnings
import zipfile

import numpy as np
import torch

__all__ = [
    "FORMAT_VERSION",
    "ModelFileError",
    "ModelVersionWarning",
    "UnsupportedComponentError",
    "UntrustedTypeError",
    "default_trusted_types",
    "describe",
    "load",
    "save",
]

#: Version of the file layout; :func:`load` refuses files from a newer one.
FORMAT_VERSION = 1
_FORMAT_NAME = "hemoe_sk-safe-model"
_MANIFEST = "manifest.json"

_CODE_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.LambdaType,
    functools.partial,
)

#: A torch module's own bookkeeping, rebuilt by ``nn.Module.__init__``.
_MODULE_HOOKS = (
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks",
    "_forward_hooks_always_called",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_load_state_dict_post_hooks",
    "_load_state_dict_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
)
_MODULE_INTERNALS = {
    *_MODULE_HOOKS,
    "_is_full_backward_hook",
    "_parameters",
    "_buffers",
    "_modules",
    "_non_persistent_buffers_set",
}

#: Attributes of a skorch net that are rebuilt by ``initialize()`` or not
#: saved (training history, optimizer state).
_NET_EXTRA_ATTRS = ("classes_inferred_",)


class ModelFileError(ValueError):
    """The file is not a readable hemoe_sk model (corrupted, truncated,
    tampered with, or written by a newer format)."""


class UntrustedTypeError(TypeError):
    """The file names a class that is not in the allowlist of :func:`load`."""


class UnsupportedComponentError(TypeError):
    """:func:`save` met an object the safe format cannot express."""


class ModelVersionWarning(UserWarning):
    """The file was written under other library versions than the running
    ones; predictions may differ."""


# --------------------------------------------------------------------------
# Allowlist
# --------------------------------------------------------------------------


def _type_name(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _own_classes():
    """Every class defined in hemoe_sk's own modules.

    The package's modules are imported by their names in this installed
    package (never by a name read from a file); one that fails to import is
    skipped, so this module never breaks because of another.
    """
    import importlib
    import pkgutil

    import hemoe_sk

    classes = []
    for info in pkgutil.walk_packages(hemoe_sk.__path__, prefix="hemoe_sk."):
        if info.name in ("hemoe_sk.persistence", "hemoe_sk.cli"):
            continue
        try:
            mod = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - a broken module is not allowlisted
            continue
        classes += [
            value
            for value in vars(mod).values()
            if isinstance(value, type) and value.__module__ == info.name
        ]
    return classes


@functools.lru_cache(maxsize=None)
def _default_types():
    """Name -> class for every class a file may name without ``trusted=``."""
    import skorch
    import skorch.dataset
    from sklearn import (
        cluster,
        decomposition,
        linear_model,
        mixture,
        model_selection,
        pipeline,
        preprocessing,
    )
    from torch import nn

    classes = _own_classes() + [
        skorch.NeuralNet,
        skorch.NeuralNetClassifier,
        skorch.NeuralNetRegressor,
        skorch.dataset.Dataset,
        torch.utils.data.DataLoader,
        cluster.KMeans,
        cluster.MiniBatchKMeans,
        mixture.GaussianMixture,
        decomposition.PCA,
        linear_model.LogisticRegression,
        preprocessing.StandardScaler,
        preprocessing.MinMaxScaler,
        preprocessing.MaxAbsScaler,
        preprocessing.RobustScaler,
        pipeline.Pipeline,
        model_selection.KFold,
        model_selection.StratifiedKFold,
        model_selection.ShuffleSplit,
        model_selection.StratifiedShuffleSplit,
    ]
    for value in vars(nn).values():  # torch's own layers (Linear, ReLU, ...)
        if isinstance(value, type) and issubclass(value, nn.Module):
            classes.append(value)
    for value in vars(torch.optim).values():
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            classes.append(value)
    for value in vars(nn.modules.loss).values():
        if (
            isinstance(value, type)
            and issubclass(value, nn.modules.loss._Loss)
            and not value.__name__.startswith("_")
        ):
            classes.append(value)
    return {_type_name(c): c for c in classes}


def default_trusted_types():
    """Names of the classes a file may name without ``trusted=``.

    Returns
    -------
    list of str
        ``"module:QualifiedName"`` strings, sorted.
    """
    return sorted(_default_types())


def _allowlist(trusted):
    table = dict(_default_types())
    for cls in trusted or ():
        if not isinstance(cls, type):
            raise TypeError(
                "trusted must be a list of classes (the objects themselves, "
                f"not names); got {cls!r}."
            )
        table[_type_name(cls)] = cls
    return table


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------

_JOBLIB_HINT = (
    "The safe format covers hemoe_sk's estimators with torch module classes, "
    "scikit-learn clusterers, scalers and linear models from its allowlist. "
    "For other components use joblib.dump(estimator, path) and load the file "
    "only if you trust it (joblib/pickle files run code when loaded)."
)


def _versions():
    import sklearn
    import skorch

    from . import __version__

    return {
        "hemoe_sk": __version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "skorch": skorch.__version__,
        "numpy": np.__version__,
    }


class _Writer:
    """Turns an object graph into JSON plus array and tensor members."""

    def __init__(self, allowlist):
        self.allowlist = allowlist
        self.names = {id(c): n for n, c in allowlist.items()}
        self.members = {}
        self.objects = []
        self.memo = {}  # id(obj) -> index in self.objects
        self.keep = []  # keeps memoised objects alive while saving
        self.types = set()

    # -- members ---------------------------------------------------------
    def _add_member(self, prefix, data):
        name = f"{prefix}/{len(self.members)}"
        self.members[name] = data
        return name

    def _array_member(self, arr):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        return self._add_member("arrays", buf.getvalue())

    def _tensor_member(self, obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return self._add_member("tensors", buf.getvalue())

    # -- values ----------------------------------------------------------
    def type_ref(self, cls, where):
        name = self.names.get(id(cls))
        if name is None:
            raise UnsupportedComponentError(
                f"{where}: class {cls.__module__}.{cls.__qualname__} is not in the "
                "safe format's allowlist. If it is your own class (e.g. a torch "
                f"module or optimizer), pass trusted=[{cls.__qualname__}] to both "
                "hemoe_sk.save() and hemoe_sk.load(). " + _JOBLIB_HINT
            )
        self.types.add(name)
        return {"$type": name}

    def encode(self, value, where):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return {"$float": repr(value)}
        if isinstance(value, np.ma.MaskedArray):
            return {
                "$masked": {
                    "data": self.encode(np.ma.getdata(value), where),
                    "mask": self.encode(np.ma.getmaskarray(value), where),
                }
            }
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biufcUSmM":
                return {"$array": self._array_member(value)}
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
            raise UnsupportedComponentError(
                f"{where}: numpy arrays of dtype {value.dtype} are not supported. "
                + _JOBLIB_HINT
            )
        if isinstance(value, np.generic):
            if value.dtype.kind in "biuf":
                item = value.item()
                return {"$npscalar": [value.dtype.str, self.encode(item, where)]}
            if value.dtype.kind in "US":
                return self.encode(str(value), where)
            raise UnsupportedComponentError(
                f"{where}: numpy scalars of dtype {value.dtype} are not supported."
            )
        if isinstance(value, tuple):
            return {
                "$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            }
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(value)
            except TypeError:
                items = list(value)
            return {"$set": [self.encode(v, where) for v in items]}
        if isinstance(value, dict):
            return {
                "$dict": [
                    [self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        if isinstance(value, torch.Tensor):
            return {"$tensor": self._tensor_member(value.detach().cpu())}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, type):
            return self.type_ref(value, where)
        if isinstance(value, _CODE_TYPES):
            raise UnsupportedComponentError(
                f"{where}: {value!r} is code (a function, method or partial), which "
                "the safe format cannot store. " + _JOBLIB_HINT
            )
        return {"$ref": self._object(value, where)}

    # -- objects (memoised, so shared nets are written once) --------------
    def _object(self, obj, where):
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        index = len(self.objects)
        self.memo[key] = index
        self.keep.append(obj)
        self.objects.append(None)
        self.objects[index] = self._describe(obj, where)
        return index

    def _describe(self, obj, where):
        from skorch import NeuralNet

        if isinstance(obj, np.random.RandomState):
            kind, keys, pos, has_gauss, cached = obj.get_state()
            return {
                "kind": "random_state",
                "state": [kind, self.encode(keys, where), pos, has_gauss, cached],
            }
        cls = type(obj)
        if isinstance(obj, NeuralNet):
            return self._net(obj, where)
        if isinstance(obj, torch.nn.Module):
            return self._module(obj, where)
        type_ref = self.type_ref(cls, f"{where} ({cls.__qualname__} instance)")
        getstate = getattr(cls, "__getstate__", None)
        if getstate is not None and getstate is not getattr(
            object, "__getstate__", None
        ):
            state = obj.__getstate__()
        else:
            state = getattr(obj, "__dict__", None)
        if not isinstance(state, dict):
            raise UnsupportedComponentError(
                f"{where}: {cls.__qualname__} has no plain attribute dictionary. "
                + _JOBLIB_HINT
            )
        state = {k: v for k, v in state.items() if k != "_sklearn_version"}
        return {
            "kind": "object",
            "type": type_ref["$type"],
            "state": {k: self.encode(v, f"{where}.{k}") for k, v in state.items()},
        }

    def _module(self, module, where):
        """A torch module instance: its class, plain attributes, children,
        and its own parameters and buffers (one tensor member)."""
        cls = type(module)
        type_ref = self.type_ref(cls, f"{where} (torch module)")
        getstate = getattr(cls, "__getstate__", None)
        state = (
            module.__getstate__()
            if getstate is not None and getstate is not torch.nn.Module.__getstate__
            else module.__dict__
        )
        for key in _MODULE_HOOKS:
            if state.get(key):
                raise UnsupportedComponentError(
                    f"{where}: the module has {key} (functions), which the safe "
                    "format cannot store. " + _JOBLIB_HINT
                )
        tensors, params, buffers = {}, {}, {}
        for name, p in state["_parameters"].items():
            params[name] = None if p is None else bool(p.requires_grad)
            if p is not None:
                tensors["p:" + name] = p.detach().cpu()
        for name, b in state["_buffers"].items():
            buffers[name] = b is not None
            if b is not None:
                tensors["b:" + name] = b.detach().cpu()
        present = [
            t
            for t in (*state["_parameters"].values(), *state["_buffers"].values())
            if t is not None
        ]
        return {
            "kind": "torch_module",
            "type": type_ref["$type"],
            "device": str(present[0].device) if present else None,
            "tensors": self._tensor_member(tensors) if tensors else None,
            "parameters": params,
            "buffers": buffers,
            "non_persistent": sorted(state.get("_non_persistent_buffers_set", ())),
            "children": {
                name: self.encode(child, f"{where}.{name}")
                for name, child in state["_modules"].items()
            },
            "state": {
                k: self.encode(v, f"{where}.{k}")
                for k, v in state.items()
                if k not in _MODULE_INTERNALS
            },
        }

    def _net(self, net, where):
        cls = type(net)
        type_ref = self.type_ref(cls, f"{where} (skorch net)")
        params = {
            k: v for k, v in net.get_params(deep=False).items() if not k.startswith("_")
        }
        record = {
            "kind": "skorch_net",
            "type": type_ref["$type"],
            "params": {k: self.encode(v, f"{where}.{k}") for k, v in params.items()},
            "initialized": bool(getattr(net, "initialized_", False)),
            "states": {},
            "attrs": {},
        }
        if record["initialized"]:
            for name in [
                *getattr(net, "_modules", ["module"]),
                *getattr(net, "_criteria", ["criterion"]),
            ]:
                part = getattr(net, name + "_", None)
                if isinstance(part, torch.nn.Module):
                    state = {k: v.detach().cpu() for k, v in part.state_dict().items()}
                    record["states"][name] = self._tensor_member(state)
            for name in _NET_EXTRA_ATTRS:
                if name in net.__dict__:
                    record["attrs"][name] = self.encode(
                        net.__dict__[name], f"{where}.{name}"
                    )
        return record


def save(estimator, path, *, trusted=None):
    """Write ``estimator`` to ``path`` in hemoe_sk's safe format.

    Parameters
    ----------
    estimator : estimator
        A hemoe_sk estimator (fitted or not), or a scikit-learn ``Pipeline``
        of allowlisted steps ending in one.
    path : str, path-like or binary file object
        Destination. A path is written atomically (to a temporary file that
        replaces ``path`` only when complete), so a failed save never leaves
        a truncated model behind.
    trusted : list of classes, optional
        Extra classes the file may name, e.g. your own torch module passed
        as ``embedder``. The same list must be given to :func:`load`.

    Returns
    -------
    path
        ``path``, for chaining.

    Raises
    ------
    UnsupportedComponentError
        If the estimator holds something the format cannot express (a class
        outside the allowlist, a function, a tree-based expert, ...). The
        message names where it is, and suggests ``trusted=`` or joblib.
    """
    writer = _Writer(_allowlist(trusted))
    root = writer.encode(estimator, type(estimator).__name__)
    manifest = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": _type_name(type(estimator)),
        "versions": _versions(),
        "python": sys.version.split()[0],
        "types": sorted(writer.types),
        "root": root,
        "objects": writer.objects,
        "members": {
            name: hashlib.sha256(data).hexdigest()
            for name, data in writer.members.items()
        },
    }
    payload = json.dumps(manifest, allow_nan=False, separators=(",", ":"))

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
    def __init__(self, zf, manifest, allowlist, path, device):
        self.zf = zf
        self.manifest = manifest
        self.allowlist = allowlist
        self.path = path
        self.device = device
        self.objects = manifest.get("objects")
        if not isinstance(self.objects, list):
            raise _fail(path, "the manifest has no object table.")
        self.digests = manifest.get("members") or {}
        self.memo = {}
        self.cuda_fallback = False

    # -- members ---------------------------------------------------------
    def _member(self, name):
        if not isinstance(name, str) or name not in self.digests:
            raise _fail(self.path, f"member {name!r} is not listed in the manifest.")
        try:
            data = self.zf.read(name)
        except KeyError:
            raise _fail(
                self.path, f"member {name!r} is missing (truncated file?)."
            ) from None
        if hashlib.sha256(data).hexdigest() != self.digests[name]:
            raise _fail(self.path, f"member {name!r} does not match its checksum.")
        return data

    def _array(self, name):
        try:
            return np.load(io.BytesIO(self._member(name)), allow_pickle=False)
        except ModelFileError:
            raise
        except Exception as exc:  # object arrays need pickle: refused
            raise _fail(self.path, f"array {name!r} was refused ({exc}).") from None

    def _tensors(self, name, map_location="cpu"):
        try:
            return torch.load(
                io.BytesIO(self._member(name)),
                map_location=map_location,
                weights_only=True,
            )
        except ModelFileError:
            raise
        except Exception as exc:  # e.g. a pickle payload beyond plain tensors
            raise _fail(
                self.path,
                f"tensor member {name!r} was refused by torch.load(weights_only=True)"
                f" ({type(exc).__name__}: {_first_line(exc)}).",
            ) from None

    # -- values ----------------------------------------------------------
    def resolve_type(self, name):
        cls = self.allowlist.get(name) if isinstance(name, str) else None
        if cls is None:
            raise UntrustedTypeError(
                f"{self.path!r} names the class {name!r}, which is not in the "
                "allowlist. Loading never imports classes named by a file. If you "
                "trust this class, import it yourself and pass it in "
                "hemoe_sk.load(path, trusted=[...])."
            )
        return cls

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
        if tag == "$set":
            return set(self.decode(v) for v in body)
        if tag == "$dict":
            return {self.decode(k): self.decode(v) for k, v in body}
        if tag == "$array":
            return self._array(body)
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
            dtype = np.dtype(dtype)
            if dtype.kind not in "biuf":
                raise _fail(self.path, f"bad numpy scalar dtype {dtype}.")
            return dtype.type(self.decode(item))
        if tag == "$tensor":
            return self._tensors(body)
        if tag == "$device":
            return torch.device(str(body))
        if tag == "$type":
            return self.resolve_type(body)
        if tag == "$ref":
            return self._object(body)
        raise _fail(self.path, f"unknown tag {tag!r} in the manifest.")

    def _object(self, index):
        if not isinstance(index, int) or not 0 <= index < len(self.objects):
            raise _fail(self.path, f"bad object reference {index!r}.")
        if index in self.memo:
            return self.memo[index]
        record = self.objects[index]
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "random_state":
            kind_name, keys, pos, has_gauss, cached = record["state"]
            rs = np.random.RandomState()
            rs.set_state((kind_name, self.decode(keys), pos, has_gauss, cached))
            self.memo[index] = rs
            return rs
        if kind == "skorch_net":
            net = self._net(record)
            self.memo[index] = net
            return net
        if kind == "torch_module":
            return self._module(index, record)
        if kind != "object":
            raise _fail(self.path, f"unknown object kind {kind!r}.")
        cls = self.resolve_type(record.get("type"))
        obj = cls.__new__(cls)
        self.memo[index] = obj  # before the state: shared references resolve
        obj.__dict__.update(self._state(cls, record.get("state")))
        return obj

    def _state(self, cls, state):
        """Decoded attribute dictionary for an instance of ``cls``."""
        if not isinstance(state, dict):
            raise _fail(self.path, "an object has no attribute dictionary.")
        for key in state:
            # Data may fill attributes, never replace the class's methods.
            shadowed = getattr(cls, key, None) if isinstance(key, str) else None
            if (
                not isinstance(key, str)
                or key.startswith("__")
                or callable(shadowed)
                or isinstance(shadowed, property)
            ):
                raise _fail(
                    self.path,
                    f"attribute {key!r} of {cls.__qualname__} would replace a "
                    "method or special attribute.",
                )
        return {k: self.decode(v) for k, v in state.items()}

    def _module(self, index, record):
        cls = self.resolve_type(record.get("type"))
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise _fail(self.path, f"{cls.__qualname__} is not a torch module.")
        module = cls.__new__(cls)
        torch.nn.Module.__init__(module)  # torch's bookkeeping, nothing from the file
        self.memo[index] = module
        device = self._target_device(record.get("device"))
        tensors = {}
        if record.get("tensors") is not None:
            tensors = self._tensors(record["tensors"], map_location=device)
            if not isinstance(tensors, dict) or not all(
                isinstance(v, torch.Tensor) for v in tensors.values()
            ):
                raise _fail(self.path, "a module's tensors are not a dict of tensors.")
        for name, requires_grad in record.get("parameters", {}).items():
            module._parameters[str(name)] = (
                None
                if requires_grad is None
                else torch.nn.Parameter(
                    tensors["p:" + name], requires_grad=bool(requires_grad)
                )
            )
        for name, present in record.get("buffers", {}).items():
            module._buffers[str(name)] = tensors["b:" + name] if present else None
        module._non_persistent_buffers_set = {
            str(n) for n in record.get("non_persistent", [])
        }
        for name, child in record.get("children", {}).items():
            child = self.decode(child)
            if child is not None and not isinstance(child, torch.nn.Module):
                raise _fail(self.path, f"child {name!r} of a module is not a module.")
            module._modules[str(name)] = child
        module.__dict__.update(self._state(cls, record.get("state")))
        return module

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

    def _net(self, record):
        from skorch import NeuralNet

        cls = self.resolve_type(record.get("type"))
        if not (isinstance(cls, type) and issubclass(cls, NeuralNet)):
            raise _fail(self.path, f"{cls.__qualname__} is not a skorch net.")
        params = {k: self.decode(v) for k, v in record["params"].items()}
        device = self._target_device(params.get("device"))
        params["device"] = device
        net = cls(**params)
        if not record.get("initialized"):
            return net
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net.initialize()
        for name, member in record.get("states", {}).items():
            part = getattr(net, str(name) + "_", None)
            if not isinstance(part, torch.nn.Module):
                raise _fail(self.path, f"the net has no part {name!r}.")
            state = self._tensors(member, map_location=device)
            if not isinstance(state, dict) or not all(
                isinstance(v, torch.Tensor) for v in state.values()
            ):
                raise _fail(self.path, f"{member!r} is not a state dict of tensors.")
            try:
                part.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise _fail(
                    self.path, f"weights do not fit the {name} ({exc})."
                ) from None
            part.eval()
        for name, value in record.get("attrs", {}).items():
            if name in _NET_EXTRA_ATTRS:
                setattr(net, name, self.decode(value))
        return net


def _open(path):
    """(zipfile, manifest) of ``path``, or a clear :class:`ModelFileError`."""
    shown = (
        path
        if isinstance(path, (str, os.PathLike))
        else getattr(path, "name", "<file>")
    )
    shown = os.fspath(shown) if isinstance(shown, os.PathLike) else shown
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
        bad = zf.testzip()
        if bad is not None:
            raise _fail(shown, f"member {bad!r} is corrupted (CRC mismatch).")
        manifest = json.loads(zf.read(_MANIFEST).decode("utf-8"))
    except ModelFileError:
        zf.close()
        raise
    except KeyError:
        zf.close()
        raise _fail(
            shown, f"it has no {_MANIFEST} (not written by hemoe_sk.save)."
        ) from None
    except Exception as exc:
        zf.close()
        raise _fail(shown, f"the file is truncated or corrupted ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_NAME:
        zf.close()
        raise _fail(shown, "it was not written by hemoe_sk.save.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        zf.close()
        raise _fail(
            shown,
            f"it uses format version {version!r}; this hemoe_sk reads up to "
            f"{FORMAT_VERSION}. Upgrade hemoe_sk.",
        )
    return zf, manifest, shown


def describe(path):
    """What a model file holds, without building anything from it.

    Parameters
    ----------
    path : str, path-like or binary file object

    Returns
    -------
    dict
        ``estimator`` (class name), ``format_version``, ``versions`` (of the
        libraries that wrote it), ``types`` (every class it names) and
        ``untrusted_types`` (those outside the default allowlist, which
        :func:`load` needs in ``trusted=``).
    """
    zf, manifest, _ = _open(path)
    zf.close()
    types = [t for t in manifest.get("types", []) if isinstance(t, str)]
    default = _default_types()
    return {
        "estimator": manifest.get("estimator"),
        "format_version": manifest.get("format_version"),
        "versions": manifest.get("versions", {}),
        "types": types,
        "untrusted_types": [t for t in types if t not in default],
    }


def load(path, *, trusted=None, device=None):
    """Read an estimator written by :func:`save`.

    Nothing in the file is executed: classes come from the allowlist
    (:func:`default_trusted_types` plus ``trusted``), arrays are read with
    ``allow_pickle=False`` and weights with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : str, path-like or binary file object
    trusted : list of classes, optional
        Extra classes the file may name (the ones given to :func:`save`).
    device : str, optional
        Torch device for every net. By default each net goes back to the
        device it was saved from; a CUDA net on a machine without CUDA is
        put on the CPU with a warning.

    Returns
    -------
    estimator

    Raises
    ------
    ModelFileError
        The file is truncated, corrupted, tampered with (e.g. a pickle payload
        in place of weights), or from a newer format version.
    UntrustedTypeError
        The file names a class outside the allowlist.

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
    zf, manifest, shown = _open(path)
    with zf:
        saved = manifest.get("versions") or {}
        running = _versions()
        differ = {k: (saved.get(k), v) for k, v in running.items() if saved.get(k) != v}
        if differ:
            listed = ", ".join(
                f"{k} {a} (file) vs {b} (now)" for k, (a, b) in differ.items()
            )
            warnings.warn(
                f"{shown!r} was saved with other library versions: {listed}. The "
                "model loads, but its predictions may differ; re-save it under "
                "the current versions once checked.",
                ModelVersionWarning,
                stacklevel=2,
            )
        reader = _Reader(zf, manifest, _allowlist(trusted), shown, device)
        try:
            estimator = reader.decode(manifest.get("root"))
        except (ModelFileError, UntrustedTypeError):
            raise
        except RecursionError:
            raise _fail(shown, "the object graph is nested too deeply.") from None
        except Exception as exc:
            raise _fail(shown, f"{type(exc).__name__}: {exc}") from None
        if reader.cuda_fallback:
            warnings.warn(
                f"{shown!r} holds networks trained on CUDA, which is not available "
                "here; they were loaded on the CPU.",
                RuntimeWarning,
                stacklevel=2,
            )
    return estimator
