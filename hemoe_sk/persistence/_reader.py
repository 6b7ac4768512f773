"""Loading: manifest records back to objects, every one checked first.

Order of work for a net: its parameters against the allowlist, the *real*
safetensors headers of its weights (sizes checked, nothing inflated beyond
them), its module built on the meta device with arguments capped by those
tensors and compared with them (shapes and dtypes), and only then the
allocation (``initialize``) and the weights. Objects form a tree (shared
parts allowed, a reference to an object still being built is refused), and
:func:`._validate.validate` checks the decoded model as a whole.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from ._allowlist import (
    NET_VALUES,
    SKLEARN_STATE,
    check_device,
    check_n_jobs,
    check_net_params,
    plain,
)
from ._checks import MemberReader, first_line
from ._codecs import BY_NAME, VALIDATED, VALIDATED_ARRAYS, codec_of, resolve
from ._errors import ModelFileError, UntrustedTypeError, fail
from ._modules import (
    MODULE_ARGS,
    build_verified,
    check_args,
    check_caps,
    check_state,
    int_caps,
    net_parts,
    own_state,
    probe_module,
    shapes_of,
)

__all__ = ["Reader"]

_MAX_OBJARRAY = 100_000
_EXPERT_KINDS = ("finetune", "residual", "lora")


class Reader:
    """Decodes a checked manifest into objects (see the module docstring)."""

    def __init__(self, zf, manifest, trusted, path, device):
        self.manifest = manifest
        self.trusted = trusted
        self.trusted_classes = set(trusted.values())
        self.path = path
        self.device = device
        self.objects = manifest["objects"]
        self.members = MemberReader(zf, manifest["members"], path)
        self.memo = {}
        self.building = set()
        self.built = []  # (codec, object), in build order
        self.cuda_fallback = False

    def fail(self, why):
        return fail(self.path, why)

    # -- values ----------------------------------------------------------
    def resolve_class(self, name, *, instance):
        codec = BY_NAME.get(name) if isinstance(name, str) else None
        if codec is not None and (codec.build == "class") != instance:
            return codec, resolve(codec)
        if not instance and isinstance(name, str) and name in self.trusted:
            return None, self.trusted[name]
        hint = (
            "If it is your own class and you trust it, import it yourself and "
            "pass it in hemoe_sk.load(path, trusted=[...])."
            if not instance
            else "Files may only hold the objects of hemoe_sk's state codecs."
        )
        raise UntrustedTypeError(
            f"{self.path!r} names the class {name!r:.100}, which is not in the "
            "allowlist of the safe format. Loading never imports classes named by a "
            f"file. {hint}"
        )

    def decode(self, value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            raise self.fail(f"unexpected value in the manifest: {value!r:.80}")
        ((tag, body),) = value.items()
        handler = _TAGS.get(tag)
        if handler is None:
            raise self.fail(f"unknown tag {tag!r:.40} in the manifest.")
        try:
            return handler(self, body)
        except (ModelFileError, UntrustedTypeError):
            raise
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise self.fail(f"bad {tag} value ({first_line(exc):.100}).") from None

    def _float(self, body):
        if body not in ("nan", "inf", "-inf"):
            raise self.fail(f"bad float {body!r:.40}.")
        return float(body)

    def _objarray(self, body):
        shape = tuple(int(s) for s in body["shape"])
        items = body["items"]
        if (
            not isinstance(items, list)
            or len(items) > _MAX_OBJARRAY
            or min(shape, default=0) < 0
            or math.prod(shape) != len(items)
        ):
            raise self.fail("an object array does not match its shape.")
        arr = np.empty(len(items), dtype=object)
        arr[:] = [self.decode(v) for v in items]
        return arr.reshape(shape)

    def _npscalar(self, body):
        dtype, item = body
        dtype = np.dtype(str(dtype))
        if dtype.kind not in "biuf" or not isinstance(item, (int, float, dict)):
            raise self.fail(f"bad numpy scalar dtype {dtype}.")
        return dtype.type(self.decode(item))

    def _device(self, body):
        why = check_device(body)
        if why:
            raise self.fail(f"{why}.")
        return torch.device(str(body))

    def _dict_tag(self, body):
        out = {}
        for k, v in body:
            key = self.decode(k)
            if not isinstance(key, (str, int, float, bool, tuple, type(None))):
                raise self.fail("a dict key is not plain data.")
            out[key] = self.decode(v)
        return out

    def _masked(self, body):
        data, mask = self.decode(body["data"]), self.decode(body["mask"])
        if not (isinstance(data, np.ndarray) and isinstance(mask, np.ndarray)):
            raise self.fail("a masked array is not two arrays.")
        return np.ma.MaskedArray(data, mask=mask)

    def object(self, index):
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < len(self.objects)
        ):
            raise self.fail(f"bad object reference {index!r:.40}.")
        if index in self.memo:
            return self.memo[index]
        if index in self.building:
            raise self.fail(
                f"object {index} refers to itself (a cycle); model files hold trees "
                "of objects."
            )
        record = self.objects[index]
        if not isinstance(record, dict):
            raise self.fail(f"object {index} is not a record.")
        codec, cls = self.resolve_class(record.get("class"), instance=True)
        self.building.add(index)
        obj = getattr(self, "_" + codec.build)(record, codec, cls)
        self.building.discard(index)
        self.memo[index] = obj
        self.built.append((codec, obj))
        return obj

    # -- helpers ---------------------------------------------------------
    def _dict(self, record, key):
        value = record.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(f"{key!r} of a {record.get('class')} is not a dict.")
        return value

    def _params(self, record):
        params = {k: self.decode(v) for k, v in self._dict(record, "params").items()}
        why = check_n_jobs(params)
        if why:
            raise self.fail(f"{record['class']}: {why}.")
        return params

    def _construct(self, cls, kwargs, record):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise self.fail(
                f"{record.get('class')} cannot be rebuilt from the file "
                f"({first_line(exc):.200})."
            ) from None

    @staticmethod
    def _setstate(obj, state):
        obj.__setstate__(state)

    # -- builders, one per codec kind ---------------------------------------
    def _estimator(self, record, codec, cls):
        params = self._params(record)
        if "device" in params:
            why = check_device(params["device"], allow_auto=True, allow_none=True)
            if why:
                raise self.fail(f"{codec.name}: {why}.")
        obj = self._construct(cls, params, record)
        state = {}
        for name, value in self._dict(record, "arrays").items():
            if name not in (*codec.arrays, *VALIDATED_ARRAYS):
                raise self.fail(f"{name!r} is not a fitted array of {codec.name}.")
            state[name] = self.decode(value)
            if not isinstance(state[name], np.ndarray):
                raise self.fail(f"{codec.name}.{name} is not an array.")
        for name, value in self._dict(record, "values").items():
            if name not in (*codec.values, *VALIDATED):
                raise self.fail(
                    f"attribute {name!r:.60} is not part of {codec.name}'s saved state "
                    "(it would replace a method or an attribute it does not save).",
                )
            state[name] = self.decode(value)
        if state:
            self._setstate(obj, {**obj.__dict__, **state})
        return obj

    def _sklearn(self, record, codec, cls):
        import sklearn
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        obj = self._construct(cls, self._params(record), record)
        allowed = set(SKLEARN_STATE[codec.name])
        state = {}
        for name, value in self._dict(record, "state").items():
            shadowed = getattr(cls, name, None)
            if (
                name.startswith("__")
                or callable(shadowed)
                or isinstance(shadowed, property)
            ):
                raise self.fail(
                    f"attribute {name!r:.60} of {codec.name} would replace a method or "
                    "special attribute.",
                )
            if name not in allowed:
                raise self.fail(
                    f"{name!r:.60} is not a fitted attribute of {codec.name}."
                )
            state[name] = self.decode(value)
            if name.startswith("_") and not (
                plain(state[name]) or isinstance(state[name], (np.ndarray, dict))
                or codec_of(type(state[name])) is not None
            ):
                raise self.fail(f"{codec.name}.{name} is not plain data.")
        if "_n_threads" in state:  # threads at predict: this machine's, not the file's
            state["_n_threads"] = _openmp_effective_n_threads()
        self._setstate(
            obj, {**obj.__dict__, **state, "_sklearn_version": sklearn.__version__}
        )
        return obj

    def _init(self, record, codec, cls):
        init = self._dict(record, "init")
        if set(init) != set(codec.init):
            raise self.fail(
                f"{codec.name} needs exactly {list(codec.init)}; got {list(init)[:20]}."
            )
        kwargs = {k: self.decode(v) for k, v in init.items()}
        for name in codec.arrays:
            if not isinstance(kwargs[name], np.ndarray):
                raise self.fail(f"{codec.name}.{name} is not an array.")
        return self._construct(cls, kwargs, record)

    def _refit(self, record, codec, cls):
        obj = self._construct(cls, self._params(record), record)
        arrays = record.get("refit")
        if arrays is not None:
            if not isinstance(arrays, list) or len(arrays) != len(codec.refit):
                raise self.fail(f"{codec.name} needs {list(codec.refit)} as arrays.")
            arrays = [self.decode(a) for a in arrays]
            if not all(
                isinstance(a, np.ndarray) and a.ndim == 2 and a.dtype.kind in "biuf"
                for a in arrays
            ):
                raise self.fail(f"{codec.name} needs {list(codec.refit)} as arrays.")
            try:
                obj.fit(*arrays)
            except ValueError as exc:
                raise self.fail(f"{codec.name} cannot be refitted ({exc}).") from None
        return obj

    def _target_device(self, saved):
        why = check_device(saved, allow_auto=True, allow_none=True)
        if why:
            raise self.fail(f"{why}.")
        if self.device is not None:
            return str(self.device)
        saved = "cpu" if saved is None else str(saved)
        if saved.startswith("cuda") and not torch.cuda.is_available():
            self.cuda_fallback = True
            return "cpu"
        if saved == "mps" and not torch.backends.mps.is_available():
            return "cpu"
        if saved == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return saved

    def _load_weights(self, part, state, what, assign=False):
        try:
            part.load_state_dict(state, strict=True, assign=assign)
        except RuntimeError as exc:
            raise self.fail(
                f"weights do not fit the {what} ({first_line(exc):.200})."
            ) from None
        part.eval()

    def _headers(self, record, allowed=("module", "criterion")):
        saved = self._dict(record, "state_dicts")
        unknown = sorted(set(saved) - set(allowed))
        if unknown:
            raise self.fail(f"the net has no parts {unknown[:5]}.")
        return saved, {name: self.members.tensor_header(m) for name, m in saved.items()}

    def _net_params(self, record, codec):
        params = self._params(record)
        why = check_net_params(params, self.trusted_classes)
        if why:
            raise self.fail(f"{codec.name}: {why}.")
        params["device"] = self._target_device(params.get("device"))
        return params

    def _finish_net(self, net, record, codec, saved, headers, skip=("module",)):
        for name in net_parts(net):
            part = getattr(net, name + "_", None)
            if not isinstance(part, torch.nn.Module) or name in skip:
                continue
            if name in saved:
                state = self.members.tensors(saved[name], headers[name])
                self._load_weights(part, state, name)
            elif part.state_dict():
                raise self.fail(f"the net's {name} has no saved weights.")
        for name, value in self._dict(record, "values").items():
            if name not in codec.values:
                raise self.fail(f"{name!r:.60} is not part of {codec.name}'s state.")
            value = self.decode(value)
            check = NET_VALUES.get(name)
            if check is None or not check(value):
                raise self.fail(f"{codec.name}.{name}={value!r:.40} is not allowed.")
            setattr(net, name, value)
        return net

    def _check_state(self, module, what, args=None):
        """Refuse ``module`` (the file's tensors in it, not yet used) when a
        buffer's values fail its class's check (``_modules.STATE_CHECKS``)."""
        why = check_state(module, args)
        if why:
            raise self.fail(f"{what}: {why}.")

    def _initialize(self, net, what, module=None):
        """``net.initialize()``; with ``module``, skorch takes that module
        (memory of the probed shapes, every value about to be loaded) instead
        of building and randomly initialising its own."""
        if module is not None:
            original = net.initialized_instance

            def instance(cls_or_instance, kwargs):
                if cls_or_instance is net.module:
                    return module
                return original(cls_or_instance, kwargs)

            net.initialized_instance = instance  # this instance only
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(0)  # the CPU one, restored
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    net.initialize()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise self.fail(f"{what} cannot be built ({first_line(exc):.200}).") from None
        finally:
            net.__dict__.pop("initialized_instance", None)

    def _net(self, record, codec, cls):
        module = self.decode(self._dict(record, "params").get("module"))
        if not isinstance(module, type):
            raise self.fail(
                f"{codec.name}: the net's module must be a class, got "
                f"{type(module).__name__}."
            )
        params = self._net_params(record, codec)
        initialized = record.get("initialized")
        if not isinstance(initialized, bool):
            raise self.fail(f"{codec.name}: 'initialized' is not true or false.")
        if not initialized:
            return self._construct(cls, params, record)
        saved, headers = self._headers(record)
        real = headers.get("module", {})
        args = {k[8:]: v for k, v in params.items() if k.startswith("module__")}
        why = check_args(module, args, real)
        if why:
            raise self.fail(f"{module.__name__}: {why}.")
        build = functools.partial(module, **args)
        probe = self._probe(module, args, build, real, "built from the file's parameters")
        net = self._construct(cls, params, record)
        state = self.members.tensors(saved["module"], real) if "module" in saved else {}
        ready = self._ready(probe, state, real, module, build)
        if ready is not None:  # verified before anything else is allocated
            self._check_state(ready, "the net's module", args)
        self._initialize(net, codec.name, ready)
        if ready is None:
            if state:
                self._load_weights(net.module_, state, "module")
            self._check_state(net.module_, "the net's module", args)
        return self._finish_net(net, record, codec, saved, headers)

    def _probe(self, module_cls, args, build, real, what):
        """The meta module ``build()`` makes, shapes compared with ``real``
        (None: shapes remembered from a probe, ``_modules.probe_module``)."""
        probe, why = probe_module(module_cls, args, build, real, what)
        if why:
            raise self.fail(f"{why}.")
        return probe

    def _ready(self, probe, state, real, module_cls, build):
        """The module holding the file's weights (the probe itself, or built
        uninitialised when its shapes were remembered), or None."""
        if probe is not None:
            return self._assign(probe, state, real, module_cls)
        module = build_verified(build)
        self._load_weights(module, state, module_cls.__name__)
        return module

    def _assign(self, probe, state, real, module_cls):
        """The probed (meta) module holding the file's tensors themselves
        (``load_state_dict(assign=True)``: no second allocation, no random
        init), when they are all of its parameters and buffers; else None."""
        if module_cls.__module__.split(".")[0] != "hemoe_sk":
            return None  # a trusted class of yours is built as you wrote it
        names = {n for n, _ in (*probe.named_parameters(), *probe.named_buffers())}
        if names != set(real):
            return None
        self._load_weights(probe, state, module_cls.__name__, assign=True)
        return probe

    def _recipe(self, record):
        recipe = record.get("recipe")
        if not isinstance(recipe, dict):
            raise self.fail("an expert net has no recipe.")
        kind = recipe.get("kind")
        kl, temp = recipe.get("kl_weight"), recipe.get("temperature")
        keys = {"kind", "kl_weight", "temperature"}
        if kind == "lora":
            keys |= {"rank", "alpha", "conv"}
        ok = (
            kind in _EXPERT_KINDS
            and set(recipe) == keys
            and _real(kl) and kl >= 0
            and _real(temp) and temp > 0
        )
        if ok and kind == "lora":
            rank, alpha = recipe["rank"], recipe["alpha"]
            ok = (
                type(rank) is int and rank >= 1
                and _real(alpha) and alpha > 0
                and isinstance(recipe["conv"], bool)
            )
        if not ok:
            raise self.fail(f"bad expert recipe {recipe!r:.200}.")
        return recipe

    def _expert_net(self, record, codec, cls):
        from hemoe_sk.nn.experts import ExpertNeuralNetClassifier, make_expert_net

        raw = self._dict(record, "params")
        if any(k == "module" or k.startswith("module__") for k in raw):
            raise self.fail("an expert net's module is rebuilt from its parent.")
        params = self._net_params(record, codec)
        recipe = self._recipe(record)
        parent = self.decode(record.get("parent"))
        if not (
            codec_of(type(parent)) in (BY_NAME["HemoeNeuralNetClassifier"], codec)
            and getattr(parent, "initialized_", False)
        ):
            raise self.fail("an expert net's parent is not a fitted classifier net.")
        if (
            recipe["kind"] == "finetune"
            and recipe["kl_weight"] == 0
            and not isinstance(parent, ExpertNeuralNetClassifier)
        ):
            raise self.fail("a fine-tuned expert without KL is a plain net.")
        saved, headers = self._headers(record)
        real = headers.get("module", {})
        if recipe["kind"] == "lora":
            rank = recipe["rank"]
            if rank > int_caps(real)[0] or any(
                entry["shape"][:1] != [rank]
                for key, entry in real.items()
                if key.endswith("lora_A.weight")
            ):
                raise self.fail(f"the LoRA rank {rank} does not fit the saved adapters.")
        kwargs = {k: recipe[k] for k in recipe if k != "kind"}
        try:
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = make_expert_net(parent, recipe["kind"], random_state=0, **kwargs)
        except (TypeError, ValueError) as exc:
            raise self.fail(f"the expert cannot be rebuilt ({exc}).") from None
        current = net.get_params(deep=False)
        changed = {
            k: v
            for k, v in params.items()
            if k not in ("callbacks", "classes") and not _same(current.get(k), v)
        }
        if changed:
            net.set_params(**changed)
        if shapes_of(own_state(net.module_)) != real:
            raise self.fail("weights do not fit the expert rebuilt from its recipe.")
        if real:
            state = self.members.tensors(saved["module"], real)
            result = net.module_.load_state_dict(state, strict=False)
            if result.unexpected_keys or set(result.missing_keys) & set(real):
                raise self.fail("weights do not fit the expert.")
        self._check_state(net.module_, "an expert net's module")
        net.module_.eval()
        return self._finish_net(net, record, codec, saved, headers)

    def _module(self, record, codec, cls):
        args = self.decode(record.get("args"))
        if not isinstance(args, dict) or not plain(list(args.values())):
            raise self.fail(f"{codec.name} has no constructor arguments.")
        member = record.get("state_dict")
        real = self.members.tensor_header(member) if member is not None else {}
        why = check_caps(args, int_caps(real))
        if why:
            raise self.fail(f"{codec.name}: {why}.")
        make = MODULE_ARGS[codec.name][1]
        build = functools.partial(make, cls, args)
        probe = self._probe(cls, args, build, real, "rebuilt from its arguments")
        state = self.members.tensors(member, real) if member is not None else {}
        module = self._ready(probe, state, real, cls, build)
        if module is None:
            with torch.random.fork_rng(devices=[]):
                module = build()
            self._load_weights(module, state, codec.name)
        device = torch.device(self._target_device(record.get("device")))
        tensors = (*module.parameters(), *module.buffers())  # .to() walks them all
        return module if all(t.device == device for t in tensors) else module.to(device)

    def _random_state(self, record, codec, cls):
        try:
            kind, keys, pos, has_gauss, cached = record["state"]
            keys = self.decode(keys)
            if not isinstance(keys, np.ndarray) or keys.shape != (624,):
                raise ValueError("bad key")
            rs = np.random.RandomState()
            rs.set_state((str(kind), keys, int(pos), int(has_gauss), float(cached)))
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(f"bad RandomState ({exc}).") from None
        return rs


def _real(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _same(a, b):
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False


_TAGS = {
    "$float": Reader._float,
    "$tuple": lambda self, body: tuple(self.decode(v) for v in body),
    "$dict": Reader._dict_tag,
    "$array": lambda self, body: self.members.array(body),
    "$masked": Reader._masked,
    "$objarray": Reader._objarray,
    "$npscalar": Reader._npscalar,
    "$device": Reader._device,
    "$class": lambda self, body: self.resolve_class(body, instance=False)[1],
    "$ref": lambda self, body: self.object(body),
}
