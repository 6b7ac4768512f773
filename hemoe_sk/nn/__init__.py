"""Torch modules and the skorch glue used by hemoe_sk's estimators."""

from .deepmoe import DeepMoEEmbedder, gate_sparsity
from .modules import AutoEncoder, ConvEmbedder, LinearHead, MLPEmbedder

__all__ = [
    "AutoEncoder",
    "ConvEmbedder",
    "DeepMoEEmbedder",
    "LinearHead",
    "MLPEmbedder",
    "gate_sparsity",
]
