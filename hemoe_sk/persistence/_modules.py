"""Torch modules in the safe format: building on the meta device, caps
derived from the real tensors, and the expert nets' recipes.

hemoe_sk's modules are imported here only when :func:`save` or
:func:`load` runs (never at import time).
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers
import warnings

import numpy as np
import torch

from ._allowlist import INDEX_ARGS
from ._codecs import BY_NAME, codec_of, resolve

__all__ = [
    "ARG_CHECKS",
    "MODULE_ARGS",
    "STATE_CHECKS",
    "build_on_meta",
    "check_args",
    "check_state",
    "expert_recipe",
    "int_caps",
    "net_parts",
    "own_state",
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


def build_on_meta(build):
    """``build()`` on torch's meta device (shapes only, no memory, no RNG)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
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
