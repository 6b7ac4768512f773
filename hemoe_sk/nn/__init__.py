"""Torch modules and the skorch glue used by hemoe_sk's estimators.

The networks' recipe is public here: :func:`train_net` (train a skorch net
the way the estimators do), :func:`embed` and :func:`predict_proba` (batched
inference in eval mode), with the modules and expert builders. The net
builders live in :mod:`hemoe_sk.nn.build`, the training details in
:mod:`hemoe_sk.nn.training`, inference in :mod:`hemoe_sk.nn.inference`.
"""

from .deepmoe import DeepMoEEmbedder, gate_sparsity
from .experts import (
    ExpertNeuralNetClassifier,
    KLToParentModule,
    LoRAConv2d,
    LoRALinear,
    ResidualExpertModule,
    expert_parameter_bytes,
    expert_parameters,
    lora_expert,
    make_expert_net,
)
from .inference import embed, predict_proba
from .modules import AutoEncoder, ConvEmbedder, LinearHead, MLPEmbedder
from .recipe import PeriodicEmbedding, RobustScaling, TabularEmbedder
from .training import train_net

__all__ = [
    "AutoEncoder",
    "ConvEmbedder",
    "DeepMoEEmbedder",
    "ExpertNeuralNetClassifier",
    "KLToParentModule",
    "LinearHead",
    "LoRAConv2d",
    "LoRALinear",
    "MLPEmbedder",
    "PeriodicEmbedding",
    "ResidualExpertModule",
    "RobustScaling",
    "TabularEmbedder",
    "embed",
    "expert_parameter_bytes",
    "expert_parameters",
    "gate_sparsity",
    "lora_expert",
    "make_expert_net",
    "predict_proba",
    "train_net",
]
