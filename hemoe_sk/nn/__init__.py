"""Torch modules and the skorch glue used by hemoe_sk's estimators."""

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
from .modules import AutoEncoder, ConvEmbedder, LinearHead, MLPEmbedder
from .recipe import PeriodicEmbedding, RobustScaling, TabularEmbedder

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
    "expert_parameter_bytes",
    "expert_parameters",
    "gate_sparsity",
    "lora_expert",
    "make_expert_net",
]
