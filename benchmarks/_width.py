"""Wider and narrower copies of the default network, whatever it is.

The width sweep of the Pareto report (``width-0.5x`` ... ``width-8x``) and the
equal-parameter control (``ctrl-wide``) both need "the default embedder with
about ``f`` times the base's parameters". Nothing here names the default
module: it is read at run time from ``build_embedder_net(None, ...)``, its
arguments from the net's ``module__*`` parameters, the module's signature
defaults and, where the module derives arguments from the training rows, its
``data_defaults(X)`` class method. Its width argument is the first of
:data:`WIDTH_PARAMETERS` that holds an int or a tuple of ints; every entry is
multiplied by one common factor, found by bisection so that the module's
parameter count (of an instance built here, on the CPU) is closest to the
target.
"""

from __future__ import annotations

import inspect

from ._models import TREE_RECORD, Skip, _import, register_model

#: Module arguments read as "the width", in order of preference.
WIDTH_PARAMETERS = (
    "hidden_dims",
    "d_block",
    "hidden_width",
    "width",
    "d_hidden",
    "hidden_dim",
    "channels",
    "embedding_dim",
)


def n_parameters(module):
    """Trainable parameters of a torch module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def default_module(n_features, n_classes, X=None):
    """``(module_class, kwargs)`` of the default embedder for this data.

    ``kwargs`` holds every argument but ``n_features``/``n_classes``: the
    net's ``module__*`` settings, the module's ``data_defaults(X)`` where it
    has one and ``X`` is given, then its signature defaults.
    """
    build = _import("hemoe_sk.nn.build", "build_embedder_net")
    net = build(None, n_features=int(n_features), n_classes=int(n_classes))
    params = net.get_params(deep=False)
    cls = params["module"]
    kwargs = {}
    for name, p in inspect.signature(cls).parameters.items():
        if p.default is not inspect.Parameter.empty:
            kwargs[name] = p.default
    hook = getattr(cls, "data_defaults", None)
    if X is not None and callable(hook):
        kwargs.update(hook(X))
    for key, value in params.items():
        if key.startswith("module__"):
            kwargs[key[len("module__") :]] = value
    for name in ("n_features", "n_classes"):
        kwargs.pop(name, None)
    return cls, kwargs


def _is_width(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return (
        isinstance(value, (tuple, list))
        and len(value) > 0
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )


def width_parameter(kwargs):
    """Name of the width argument among ``kwargs``, or Skip."""
    for name in WIDTH_PARAMETERS:
        if _is_width(kwargs.get(name)):
            return name
    raise Skip(
        "the default embedder has no width argument to scale (looked for "
        f"{', '.join(WIDTH_PARAMETERS)} holding ints; got {sorted(kwargs)})"
    )


def scale_width(value, factor):
    """``value`` (an int or a tuple of ints) times ``factor``, at least 1 each.

    Examples
    --------
    >>> scale_width((128, 64), 1.5), scale_width(256, 0.5)
    ((192, 96), 128)
    """
    if isinstance(value, int):
        return max(1, round(value * factor))
    return tuple(max(1, round(v * factor)) for v in value)


def scaled_module(cls, kwargs, n_features, n_classes, ratio, tol=0.02):
    """Width value giving ``cls`` about ``ratio`` times the parameters it has
    with ``kwargs``.

    Returns ``(name, value, n_params, base_params)``: the width argument,
    its scaled value, the scaled module's parameter count and the base's.
    """
    name = width_parameter(kwargs)
    base_value = kwargs[name]

    def count(value):
        module = cls(int(n_features), int(n_classes), **{**kwargs, name: value})
        return n_parameters(module)

    base = count(base_value)
    target = ratio * base
    if ratio == 1:
        return name, base_value, base, base
    # Parameter counts grow monotonically with the width: bisect the factor.
    lo, hi = 1e-3, 1.0
    while count(scale_width(base_value, hi)) < target:
        hi *= 2
        if hi > 1e4:
            raise Skip(f"cannot reach {ratio:g}x the base's parameters by width")
    best = None
    for _ in range(60):
        mid = (lo + hi) / 2
        value = scale_width(base_value, mid)
        n = count(value)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (value, n)
        if abs(n - target) <= tol * target:
            break
        lo, hi = (mid, hi) if n < target else (lo, mid)
    return name, best[0], best[1], base


def _scaled(ctx, ratio):
    """The base network (``max_depth=0``) with about ``ratio`` times the
    default embedder's parameters on this split."""
    from ._models import hemoe

    cls, kwargs = default_module(ctx.n_features, ctx.n_classes, ctx.X_train)
    name, value, _, _ = scaled_module(cls, kwargs, ctx.n_features, ctx.n_classes, ratio)
    return hemoe(ctx, max_depth=0, **{f"embedder__{name}": value})


def _width_model(ratio):
    return lambda ctx: _scaled(ctx, ratio)


def _wide(ctx):
    return _scaled(ctx, int(ctx.fitted("tree-hard", "n_leaves_")))


#: The width sweep of the Pareto report: ratio of the base's parameters.
WIDTH_RATIOS = {"width-0.5x": 0.5, "width-2x": 2, "width-4x": 4, "width-8x": 8}

for _name, _ratio in WIDTH_RATIOS.items():
    register_model(
        _name,
        _width_model(_ratio),
        group="width",
        description=f"max_depth=0 with the default embedder's width scaled to about "
        f"{_ratio:g}x the base's parameters (the base itself is the 1x point)",
        record=TREE_RECORD,
        quick=False,
    )

register_model(
    "ctrl-wide",
    _wide,
    group="control",
    description="control 3, equal parameters: max_depth=0 with the default "
    "embedder's width scaled so it has about as many parameters as tree-hard's "
    "leaves together (n_leaves_ copies of the base), trained for the base's epochs",
    needs=("tree-hard",),
    record=TREE_RECORD,
    quick=False,
)
