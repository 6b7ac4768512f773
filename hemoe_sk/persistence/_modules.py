"""Torch modules in the safe format: building on the meta device, caps
derived from the real tensors, and the expert nets' recipes.

hemoe_sk's modules are imported here only when :func:`save` or
:func:`load` runs (never at import time).
"""

from __future__ import annotations

import importlib
import math
import numbers
import warnings

import torch

from ._codecs import BY_NAME, resolve

__all__ = [
    "MODULE_ARGS",
    "build_on_meta",
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
