"""Former home of the skorch glue, kept as a re-export of its 0.1 names.

The code now lives by role in :mod:`hemoe_sk.nn.build`,
:mod:`hemoe_sk.nn.training` and :mod:`hemoe_sk.nn.inference`; new code
imports from there. This module stays because ``benchmarks/`` imports it and
because pickles of 0.1 models name ``hemoe_sk.nn.nets.HemoeNeuralNetClassifier``,
``FiniteLossGuard`` and ``RowSubset``.
"""

from .build import (
    EmbedderParamsMixin,
    HemoeNeuralNetClassifier,
    build_embedder_net,
    make_classifier_net,
)
from .inference import EVAL_BATCH_SIZE, check_finite_outputs, embed, predict_proba
from .training import (
    DivergenceError,
    FiniteLossGuard,
    RowSubset,
    resolve_device,
    seed_source,
    torch_seed,
    train_net,
)

__all__ = [
    "EVAL_BATCH_SIZE",
    "DivergenceError",
    "EmbedderParamsMixin",
    "FiniteLossGuard",
    "HemoeNeuralNetClassifier",
    "RowSubset",
    "build_embedder_net",
    "check_finite_outputs",
    "embed",
    "make_classifier_net",
    "predict_proba",
    "resolve_device",
    "seed_source",
    "torch_seed",
    "train_net",
]
