"""Anchors: what a user would pick instead of hemoe_sk, on the same splits.

Registered into :data:`benchmarks._models.MODELS` (group ``"anchor"``) when
this module is imported (``benchmarks.run`` does). Each model raises
:class:`~benchmarks._models.Skip` with an install hint where its package is
absent, so a run without the ``bench`` extra prints a clear message and goes
on. Every anchor is limited to the run's ``--threads`` (``Config.threads``),
the same budget as the hemoe_sk fits, so times compare within one run.

* ``lgbm``: ``LGBMClassifier()`` with its defaults (100 trees of 31 leaves);
* ``lgbm-1000``: 1000 trees of 127 leaves at learning rate 0.1, no early
  stopping (the stronger fixed configuration of issue 22);
* ``hgb-1000``: ``HistGradientBoostingClassifier`` with 1000 iterations,
  127 leaves and early stopping on its own 10% validation split;
* ``realmlp-td``: pytabkit's ``RealMLP_TD_Classifier()``, its tuned
  defaults, on the CPU;
* ``tabm-d``: pytabkit's ``TabM_D_Classifier()``, its defaults, on the CPU;
* ``conv``: hemoe_sk's own :class:`~hemoe_sk.nn.ConvEmbedder` as the base
  network (``max_depth=0``) on square single-channel images; skipped on
  other data.

``lgbm-reg`` (the regressors' anchor) lives in ``benchmarks/_regress.py``.
"""

from __future__ import annotations

import math

from ._models import Skip, _import, hemoe, register_model

#: pip hint printed when an anchor's package is missing.
INSTALL_HINT = "install the bench extra: `make bench-install` (CPU torch pinned)"


def _anchor_import(module, attribute):
    try:
        return _import(module, attribute)
    except Skip as exc:
        raise Skip(f"{exc}; {INSTALL_HINT}") from None


def _lgbm(**params):
    def build(ctx):
        cls = _anchor_import("lightgbm", "LGBMClassifier")
        return cls(
            **params, n_jobs=ctx.config.threads, random_state=ctx.seed, verbose=-1
        )

    return build


def _hgb_1000(ctx):
    cls = _import("sklearn.ensemble", "HistGradientBoostingClassifier")
    # Threads: the worker's threadpoolctl limit (OpenMP) applies to HGB.
    return cls(
        max_iter=1000, max_leaf_nodes=127, early_stopping=True, random_state=ctx.seed
    )


def _pytabkit(name):
    def build(ctx):
        cls = _anchor_import("pytabkit", name)
        return cls(
            device="cpu",
            random_state=ctx.seed,
            n_threads=ctx.config.threads,
            verbosity=0,
        )

    return build


def square_image_shape(n_features):
    """``(1, s, s)`` when ``n_features`` is a perfect square ``s * s``, else Skip.

    Examples
    --------
    >>> square_image_shape(784)
    (1, 28, 28)
    """
    side = math.isqrt(int(n_features))
    if side < 2 or side * side != n_features:
        raise Skip(
            f"ConvEmbedder needs square grey images; {n_features} features are not "
            "a square number of pixels"
        )
    return (1, side, side)


def _conv(ctx):
    shape = square_image_shape(ctx.n_features)
    embedder = _import("hemoe_sk.nn", "ConvEmbedder")
    return hemoe(ctx, embedder, max_depth=0, embedder__image_shape=shape)


register_model(
    "lgbm",
    _lgbm(),
    group="anchor",
    description="LightGBM LGBMClassifier() defaults (100 trees, 31 leaves, lr 0.1)",
    quick=False,
)
register_model(
    "lgbm-1000",
    _lgbm(n_estimators=1000, num_leaves=127, learning_rate=0.1),
    group="anchor",
    description="LightGBM, 1000 trees of 127 leaves, lr 0.1, no early stopping",
    quick=False,
)
register_model(
    "hgb-1000",
    _hgb_1000,
    group="anchor",
    description="HistGradientBoostingClassifier(max_iter=1000, max_leaf_nodes=127, "
    "early_stopping=True)",
    quick=False,
)
register_model(
    "realmlp-td",
    _pytabkit("RealMLP_TD_Classifier"),
    group="anchor",
    description="pytabkit RealMLP_TD_Classifier() (tuned defaults), CPU",
    quick=False,
)
register_model(
    "tabm-d",
    _pytabkit("TabM_D_Classifier"),
    group="anchor",
    description="pytabkit TabM_D_Classifier() (defaults), CPU",
    quick=False,
)
register_model(
    "conv",
    _conv,
    group="hemoe_sk",
    description="ConvEmbedder (conv-BN-ReLU blocks) as the base network "
    "(max_depth=0), square grey images only",
    quick=False,
)
