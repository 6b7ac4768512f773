"""Torch modules in the safe format: building on the meta device, caps
derived from the real tensors, and the expert nets' recipes.

hemoe_sk's modules are imported here only when :func:`save` or
:func:`load` runs (never at import time).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import math
import numbers
import threading
import warnings

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ._allowlist import INDEX_ARGS
from ._codecs import BY_NAME, codec_of, resolve

__all__ = [
    "ARG_CHECKS",
    "MODULE_ARGS",
    "STATE_CHECKS",
    "build_on_meta",
    "build_verified",
    "check_args",
    "check_state",
    "expert_recipe",
    "int_caps",
    "net_parts",
    "own_state",
    "probe_key",
    "probe_module",
    "probed_shapes",
    "remember_probe",
    "shapes_of",
]


def _experts():
    return importlib.import_module("hemoe_sk.nn.experts")


def net_parts(net):
    """Names of a skorch net's modules and criteria (``module``, ``criterion``)."""
    return [
        *(getattr(net, "_modules", None) or ["module"]),
        *(getattr(net, "_criteria", None) or ["criterion"]),
    ]


def shapes_of(state):
    """``{key: {"dtype", "shape"}}`` of a state dict (real or meta)."""
    return {
        k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
        for k, v in state.items()
    }


def int_caps(header):
    """(largest integer, longest sequence) a module argument may hold, from
    the real tensors: every size a module is built from shows up as a
    dimension of its weights, every layer list is shorter than its tensors.

    A new module class whose constructor takes an integer that is neither a
    dimension of its weights nor at most 16 (a sequence length, say) needs
    that argument exempted here.
    """
    dims = [s for entry in header.values() for s in entry["shape"]]
    return max([16, *dims]), len(header) + 3


def check_caps(value, caps, name="argument"):
    """Why ``value`` (module arguments) exceeds ``caps``, or None."""
    biggest, longest = caps
    if isinstance(value, dict):
        for k, v in value.items():
            why = check_caps(v, caps, k)
            if why:
                return why
        return None
    if isinstance(value, (list, tuple)):
        if len(value) > longest:
            return f"{name} has {len(value)} items for {longest - 3} saved tensors"
        for v in value:
            why = check_caps(v, caps, name)
            if why:
                return why
        return None
    if isinstance(value, str):  # a module may call int() on it
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        # floats too: int(1e308) experts would loop as long as 10^308 ints
        low = -1 if isinstance(value, numbers.Integral) else -biggest
        if not (math.isfinite(value) and low <= value <= biggest):
            return (
                f"{name}={value!r:.40} is larger than any dimension of the saved "
                f"weights ({biggest})"
            )
    return None


# -- per module class: arguments against the real headers, values of the tensors --


def _tabular_args(args, header):
    """TabularEmbedder: ``n_features`` is the width of the saved scaling, and
    ``numerical_features`` at most that many column indices below it."""
    n = args.get("n_features")
    center = header.get("scaling.center")
    if center is None or not (
        isinstance(n, int) and not isinstance(n, bool) and center["shape"] == [n]
    ):
        return f"n_features={n!r:.40} is not the width of the saved input scaling"
    columns = args.get("numerical_features")
    if columns is not None and (
        len(columns) > n or any(not 0 <= c < n for c in columns)
    ):
        return (
            f"numerical_features ({len(columns)} items) are not column indices "
            f"below n_features={n}"
        )
    return None


def _scaling_state(module, args=None):
    """RobustScaling: finite centres, finite positive scales."""
    if not bool(torch.isfinite(module.center).all()):
        return "the input scaling's center is not finite"
    scale = module.scale
    if not bool((torch.isfinite(scale) & (scale > 0)).all()):
        return "the input scaling's scale is not finite and positive"
    return None


def _tabular_state(module, args=None):
    """TabularEmbedder: the column indices it reads are what its arguments
    build (``numerical`` the PLR columns, ``other`` exactly the rest), all
    below the width of its scaling."""
    n = module.scaling.center.shape[0]
    numerical, other = module.numerical, module.other
    if any(t.dtype != torch.int64 or t.ndim != 1 for t in (numerical, other)):
        return "its column indices are not 1-d int64 tensors"
    k = 0 if module.plr is None else module.plr.frequencies.shape[0]
    numerical = numerical.detach().cpu().numpy()
    if len(numerical) != k or (k and (numerical.min() < 0 or numerical.max() >= n)):
        return f"its numerical columns are not {k} indices below {n}"
    if not np.array_equal(
        other.detach().cpu().numpy(), np.setdiff1d(np.arange(n), numerical)
    ):
        return "its other columns are not the columns left over"
    if args is not None and k:
        columns = args.get("numerical_features")
        wanted = np.arange(n) if columns is None else np.asarray(columns, np.int64)
        if not np.array_equal(numerical, wanted):
            return "its numerical columns are not its numerical_features"
    return None


#: Per module class of the table, ``(args, header) -> why or None``: the
#: arguments that :func:`int_caps` cannot bound (a list of column indices) are
#: bounded by the real tensors, before anything is built. Extend here.
ARG_CHECKS = {"TabularEmbedder": _tabular_args}

#: Per module class of the table, ``(module, args or None) -> why or None``:
#: the *values* of buffers that index or divide (column indices, scales),
#: checked on the file's tensors before the net is allocated; ``args`` are
#: the module's constructor arguments when it was built from them (a net's
#: module), None for a submodule or an expert's copy. Extend here.
STATE_CHECKS = {"RobustScaling": _scaling_state, "TabularEmbedder": _tabular_state}


def check_args(module_cls, args, header):
    """Why ``args`` (a net's ``module__*`` arguments) exceed what the real
    tensors ``header`` allow, or None: column-index arguments by their own
    rule, every other one by :func:`int_caps`."""
    special = ARG_CHECKS.get(module_cls.__name__) if codec_of(module_cls) else None
    if special is not None:
        why = special(args, header)
        if why:
            return why
    skip = INDEX_ARGS.get(module_cls.__name__, ()) if special else ()
    return check_caps({k: v for k, v in args.items() if k not in skip}, int_caps(header))


#: Where the classes of :data:`STATE_CHECKS` that files never name live.
_SUBMODULES = {"RobustScaling": "hemoe_sk.nn.recipe"}


@functools.cache
def _state_checks():
    out = []
    for name, check in STATE_CHECKS.items():
        if name in BY_NAME:
            cls = resolve(BY_NAME[name])
        else:
            cls = getattr(importlib.import_module(_SUBMODULES[name]), name)
        out.append((cls, check))
    return tuple(out)


def check_state(module, args=None):
    """Why the buffers of ``module`` or of any of its submodules fail their
    class's entry in :data:`STATE_CHECKS`, or None. ``args`` are ``module``'s
    own constructor arguments, if it was built from them."""
    checks = _state_checks()
    for sub in module.modules():
        for cls, check in checks:
            if isinstance(sub, cls):
                why = check(sub, args if sub is module else None)
                if why:
                    return f"{type(sub).__name__}: {why}"
    return None


#: Weight initialisers (of :mod:`torch.nn.init` and the in-place fills they
#: use) that :func:`build_on_meta` skips on meta tensors: they keep a
#: tensor's shape and dtype, and a meta tensor has no values to fill, so
#: the probe is the same without them (torch would otherwise run each one
#: through its decompositions, the larger part of building on meta).
_INIT_FUNCTIONS = (
    *(
        getattr(torch.nn.init, name)
        for name in (
            "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
            "eye_", "dirac_", "xavier_uniform_", "xavier_normal_",
            "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
        )
    ),
    *(
        getattr(torch.Tensor, name)
        for name in (
            "uniform_", "normal_", "fill_", "zero_", "bernoulli_", "exponential_",
            "random_", "log_normal_", "geometric_", "cauchy_",
        )
    ),
)


_SKIPPED = frozenset(_INIT_FUNCTIONS)


def _factories():
    """Torch's tensor factories that take a ``device`` (what
    ``torch.device("meta")`` as a context fills in), or None where this
    torch does not list them."""
    try:
        from torch.utils._device import _device_constructors
    except ImportError:  # pragma: no cover - other torch versions
        return None
    return _device_constructors()


class _OnMeta(TorchFunctionMode):
    """Tensor factories on the meta device, initialisers of meta tensors
    skipped (one mode: each torch call pays one Python hook, not two)."""

    def __init__(self, factories):
        super().__init__()
        self.factories = factories

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SKIPPED:
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        elif func in self.factories and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def build_on_meta(build):
    """``build()`` on torch's meta device (shapes only, no memory, no RNG;
    the weight initialisers, which have nothing to fill there, skipped)."""
    factories = _factories()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))
        if factories is None:  # pragma: no cover - other torch versions
            stack.enter_context(torch.device("meta"))
        else:
            stack.enter_context(_OnMeta(factories))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        return build()


# -- probes already made ------------------------------------------------------------
#
# A module class of the table builds the same shapes from the same arguments,
# so a probe's outcome is remembered: the next net or file with those
# arguments (every node of a tree, a file loaded again) is compared with the
# remembered shapes, and only once they equal its real tensors is the module
# built, on its device, uninitialised, and every weight loaded into it.

_PROBES = collections.OrderedDict()
_MAX_PROBES = 256
_PROBES_LOCK = threading.Lock()  # loads may run in several threads


def _frozen(value):
    if isinstance(value, (list, tuple)):
        return type(value).__name__, tuple(_frozen(v) for v in value)
    hash(value)  # plain data: None, bool, int, float, str
    return type(value).__name__, value


def probe_key(module_cls, args):
    """The key of a probe of ``module_cls(**args)``, or None (a class of
    yours, or arguments that are not plain data, are probed every time)."""
    if codec_of(module_cls) is None:
        return None
    try:
        return module_cls, tuple(sorted((k, _frozen(v)) for k, v in args.items()))
    except TypeError:
        return None


def probed_shapes(key):
    """The shapes a probe with ``key`` gave, if remembered."""
    if key is None:
        return None
    with _PROBES_LOCK:
        shapes = _PROBES.get(key)
        if shapes is not None:
            _PROBES.move_to_end(key)
        return shapes


def remember_probe(key, probe):
    """Remember the shapes of ``probe``, a module built on meta, when every
    one of its parameters and buffers is in its state dict (so loading a
    state dict of those shapes sets all of them)."""
    if key is None:
        return
    names = {n for n, _ in (*probe.named_parameters(), *probe.named_buffers())}
    shapes = shapes_of(probe.state_dict())
    if names != set(shapes):
        return
    with _PROBES_LOCK:
        _PROBES[key] = shapes
        while len(_PROBES) > _MAX_PROBES:
            _PROBES.popitem(last=False)


def probe_module(module_cls, args, build, real, what):
    """``(probe, why)``: the meta module ``build()`` makes (None when the
    shapes of a probe with the same arguments are remembered), and why its
    shapes are not those of the real tensors ``real`` (None if they are);
    ``what`` says how the module was built."""
    key = probe_key(module_cls, args)
    expected, probe = probed_shapes(key), None
    if expected is None:
        try:
            probe = build_on_meta(build)
        except Exception as exc:  # noqa: BLE001 - any refusal of the arguments
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return None, (
                f"{module_cls.__name__} cannot be built from the file "
                f"({type(exc).__name__}: {msg:.200})"
            )
        expected = shapes_of(probe.state_dict())
        remember_probe(key, probe)
    if expected != real:
        wrong = sorted(set(expected) ^ set(real)) or [
            k for k in expected if expected[k] != real[k]
        ]
        return probe, (
            f"weights do not fit the module {module_cls.__name__} {what} "
            f"(first differences: {wrong[:3]})"
        )
    return probe, None


def build_verified(build):
    """``build()`` for real, its shapes known to be those of the file's
    tensors (all of which are then loaded into it), the global RNG
    untouched. (Skipping the initialisers here costs more in torch's
    dispatch than it saves.)"""
    with torch.random.fork_rng(devices=[]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build()


# -- MixAE's mixture module, held outside a net ---------------------------------


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
    if set(args) != {
        "n_autoencoders",
        "n_features",
        "hidden_dims",
        "embedding_dim",
        "assignment_hidden_dims",
    }:
        raise ValueError(f"unexpected arguments {sorted(args)}")
    autoencoder = resolve(BY_NAME["AutoEncoder"])
    n_features = int(args["n_features"])
    hidden = tuple(int(d) for d in args["hidden_dims"])
    code = int(args["embedding_dim"])
    n = int(args["n_autoencoders"])
    if n < 1 or n_features < 1 or code < 1 or min(hidden, default=1) < 1:
        raise ValueError("sizes must be positive")
    parts = [autoencoder(n_features, hidden, code) for _ in range(n)]
    return cls(parts, code, tuple(int(d) for d in args["assignment_hidden_dims"]))


#: ``module`` codecs: (constructor arguments from an instance, build from them).
MODULE_ARGS = {"_MixtureOfAutoencoders": (_mixae_module_args, _mixae_module_build)}


# -- expert nets ------------------------------------------------------------------


def _frozen_prefixes(module):
    """State-dict prefixes of the frozen references inside an expert module
    (the parent's weights, which the expert does not own)."""
    ex = _experts()
    out = []

    def visit(m, prefix):
        frozen = set(m._frozen_children) if isinstance(m, ex._FrozenHolder) else set()
        for name, child in m._modules.items():
            if child is None:
                continue
            if name in frozen:
                out.append(f"{prefix}{name}.")
            else:
                visit(child, f"{prefix}{name}.")

    visit(module, "")
    return tuple(out)


def own_state(module):
    """The part of an expert module's state dict that the expert owns."""
    frozen = _frozen_prefixes(module)
    return {k: v for k, v in module.state_dict().items() if not k.startswith(frozen)}


def expert_recipe(module, parent_module):
    """The arguments of :func:`hemoe_sk.nn.experts.make_expert_net` that
    rebuild ``module``'s structure from its parent's module."""
    ex = _experts()
    parent = ex._unwrap_kl(parent_module)
    recipe = {"kind": "finetune", "kl_weight": 0.0, "temperature": 1.0}
    if isinstance(module, ex.KLToParentModule):
        if module.parent is not parent:
            raise ValueError("the KL expert's parent is not its parent net's module.")
        recipe.update(kl_weight=module.weight, temperature=module.temperature)
        module = module.child
    if isinstance(module, ex.ResidualExpertModule):
        if module.parent is not parent:
            raise ValueError("the residual expert's parent is not its parent net's.")
        recipe["kind"] = "residual"
        return recipe
    inside = {id(m) for m in ex._walk(parent)}
    adapters = [
        m
        for m in ex._walk(module)
        if isinstance(m, ex._LoRABase) and id(m.base) in inside
    ]
    if adapters:
        trained = [a for a in adapters if a.rank]
        first = trained[0] if trained else adapters[0]
        convs = [a for a in adapters if isinstance(a, ex.LoRAConv2d)]
        recipe.update(
            kind="lora",
            rank=int(first.rank),
            alpha=float(first.alpha),
            conv=bool(not convs or any(a.rank for a in convs)),
        )
    return recipe
