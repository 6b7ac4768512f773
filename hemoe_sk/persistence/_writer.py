"""Saving: an estimator to manifest records and array/tensor members."""

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
import zipfile

import numpy as np
import torch

from ._allowlist import SKLEARN_STATE, check_net_params
from ._checks import FORMAT_NAME, FORMAT_VERSION, MANIFEST, descr
from ._codecs import VALIDATED, VALIDATED_ARRAYS, codec_of, trusted_table
from ._errors import UnsupportedComponentError
from ._modules import MODULE_ARGS, expert_recipe, net_parts, own_state

__all__ = ["save"]

_CODE_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.LambdaType,
    functools.partial,
)

_JOBLIB_HINT = (
    "The safe format covers hemoe_sk's estimators, their torch modules and a "
    "fixed list of scikit-learn routers, reducers, scalers and linear models "
    "(hemoe_sk.persistence.default_trusted_types()). For other components use "
    "joblib.dump(estimator, path) and load the file only if you trust it "
    "(joblib/pickle files run code when loaded)."
)


def versions():
    """The versions of the libraries a file depends on, as now installed."""
    import sklearn
    import skorch

    # The package is imported before any of its modules, this one included.
    own = getattr(sys.modules.get("hemoe_sk"), "__version__", "unknown")
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


def _module_device(module):
    p = next(iter([*module.parameters(), *module.buffers()]), None)
    return "cpu" if p is None else str(p.device)


class Writer:
    """Turns an estimator into manifest records and array/tensor members."""

    def __init__(self, trusted):
        self.trusted = {cls: name for name, cls in trusted.items()}
        self.members = {}  # name -> bytes
        self.member_info = {}  # name -> manifest entry
        self.objects = []
        self.memo = {}  # id(obj) -> index in self.objects
        self.building = set()  # ids of the objects being encoded
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
            dtype=descr(arr.dtype),
            shape=list(arr.shape),
        )

    def tensors(self, state):
        tensors = {
            k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()
        }
        if not tensors:
            return None
        data = _safetensors().save(tensors)
        declared = {
            k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
            for k, v in tensors.items()
        }
        return self._member("tensors", "safetensors", data, tensors=declared)

    def state_dict(self, module):
        return self.tensors(module.state_dict())

    # -- values ----------------------------------------------------------
    def class_ref(self, cls, where):
        codec = codec_of(cls)
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
        codec = codec_of(type(obj))
        if codec is None or codec.build == "class":
            raise UnsupportedComponentError(
                f"{where}: {type(obj).__module__}.{type(obj).__qualname__} objects are "
                "not supported by the safe format. " + _JOBLIB_HINT
            )
        if key in self.building:
            raise UnsupportedComponentError(
                f"{where}: the object contains itself; the safe format stores trees "
                "of objects (shared parts allowed, cycles not). " + _JOBLIB_HINT
            )
        self.building.add(key)
        index = len(self.objects)  # the root is object 0
        self.objects.append(None)
        self.keep.append(obj)
        self.classes.add(codec.name)
        record = {"class": codec.name}
        record.update(getattr(self, "_" + codec.build)(obj, codec, where))
        self.objects[index] = record
        self.building.discard(key)
        self.memo[key] = index
        return index

    def _undescribed(self, obj, codec, names, where):
        extra = sorted(set(vars(obj)) - set(names))
        if extra:
            raise UnsupportedComponentError(
                f"{where}: {codec.name} has attributes {extra} that its state codec "
                "does not describe, so saving would lose them. Add them to its entry "
                "in the codec table (_CODECS, hemoe_sk/persistence/_codecs.py)."
            )

    def _params(self, params, where):
        return {k: self.encode(v, f"{where}.{k}") for k, v in params.items()}

    def _estimator(self, obj, codec, where):
        params = obj.get_params(deep=False)
        fresh = type(obj)(**params)  # what the constructor rebuilds by itself
        names = [*vars(fresh), *codec.arrays, *codec.values, *VALIDATED]
        self._undescribed(obj, codec, [*names, *VALIDATED_ARRAYS], where)
        arrays, values = {}, {}
        for name in (*codec.arrays, *VALIDATED_ARRAYS):
            if name in vars(obj):
                value = vars(obj)[name]
                if not isinstance(value, np.ndarray):
                    raise UnsupportedComponentError(
                        f"{where}.{name}: expected a numpy array, got "
                        f"{type(value).__name__}; update persistence/_codecs.py."
                    )
                arrays[name] = self.encode(value, f"{where}.{name}")
        for name in (*codec.values, *VALIDATED):
            if name in vars(obj):
                values[name] = self.encode(vars(obj)[name], f"{where}.{name}")
        return {"params": self._params(params, where), "arrays": arrays, "values": values}

    def _sklearn(self, obj, codec, where):
        params = obj.get_params(deep=False)
        allowed = set(SKLEARN_STATE[codec.name])
        state = {}
        for k, v in vars(obj).items():
            if k in params or k == "_sklearn_version":
                continue
            if k not in allowed:
                raise UnsupportedComponentError(
                    f"{where}: {codec.name} has the attribute {k!r}, which its entry "
                    "in hemoe_sk/persistence/_allowlist.py (SKLEARN_STATE) does not "
                    "list. " + _JOBLIB_HINT
                )
            state[k] = self.encode(v, f"{where}.{k}")
        return {"params": self._params(params, where), "state": state}

    def _init(self, obj, codec, where):
        self._undescribed(obj, codec, [*codec.init, *codec.transient], where)
        for name in codec.arrays:
            if not isinstance(getattr(obj, name), np.ndarray):
                raise UnsupportedComponentError(
                    f"{where}.{name}: expected a numpy array; update "
                    "persistence/_codecs.py."
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
            "params": self._params(params, where),
            "refit": (
                [
                    self.encode(np.asarray(vars(obj)[n]), f"{where}.{n}")
                    for n in codec.refit
                ]
                if fitted
                else None
            ),
        }

    def _net_params(self, net, where, *, expert=False):
        params = {
            k: v for k, v in net.get_params(deep=False).items() if not k.startswith("_")
        }
        if expert:  # the module is rebuilt from the parent and the recipe
            params = {
                k: v
                for k, v in params.items()
                if k != "module" and not k.startswith("module__")
            }
        elif not isinstance(params.get("module"), type):
            raise UnsupportedComponentError(
                f"{where}: the net's module is a {type(params.get('module')).__name__} "
                "instance; the safe format saves nets whose module is a class. "
                + _JOBLIB_HINT
            )
        encoded = self._params(params, where)  # an unknown class: trusted= hint
        why = check_net_params(params, self.trusted)
        if why:
            raise UnsupportedComponentError(f"{where}: {why}. " + _JOBLIB_HINT)
        return encoded

    def _net_state(self, net, codec, record, where, parts):
        for name, state in parts.items():
            member = self.tensors(state)
            if member is not None:
                record["state_dicts"][name] = member
        for name in codec.values:
            if name in vars(net):
                record["values"][name] = self.encode(vars(net)[name], f"{where}.{name}")
        return record

    def _parts(self, net):
        parts = {}
        for name in net_parts(net):
            part = getattr(net, name + "_", None)
            if isinstance(part, torch.nn.Module):
                parts[name] = part.state_dict()
        return parts

    def _net(self, net, codec, where):
        record = {
            "params": self._net_params(net, where),
            "initialized": bool(getattr(net, "initialized_", False)),
            "state_dicts": {},
            "values": {},
        }
        if not record["initialized"]:
            return record
        return self._net_state(net, codec, record, where, self._parts(net))

    def _expert_net(self, net, codec, where):
        parent = getattr(net, "parent_net_", None)
        if not getattr(net, "initialized_", False) or parent is None:
            raise UnsupportedComponentError(
                f"{where}: an expert net is saved fitted, with its parent net."
            )
        try:
            recipe = expert_recipe(net.module_, parent.module_)
        except ValueError as exc:
            raise UnsupportedComponentError(f"{where}: {exc} " + _JOBLIB_HINT) from None
        record = {
            "params": self._net_params(net, where, expert=True),
            "parent": {"$ref": self.object(parent, f"{where}.parent_net_")},
            "recipe": recipe,
            "state_dicts": {},
            "values": {},
        }
        parts = self._parts(net)
        parts["module"] = own_state(net.module_)
        return self._net_state(net, codec, record, where, parts)

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
        args, _ = MODULE_ARGS[codec.name]
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
        outside the codec table, a function, a tree-based expert, a net
        setting outside the allowlist, ...). The message says where it is,
        and suggests ``trusted=`` or joblib.

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
    writer = Writer(trusted_table(trusted))
    root = writer.encode(estimator, type(estimator).__name__)
    codec = codec_of(type(estimator))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": codec.name if codec else type(estimator).__name__,
        "versions": versions(),
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
            zf.writestr(MANIFEST, payload)
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
