"""Torch modules and the skorch glue used by hemoe_sk's estimators."""

from .modules import AutoEncoder, ConvEmbedder, LinearHead, MLPEmbedder

__all__ = ["AutoEncoder", "ConvEmbedder", "LinearHead", "MLPEmbedder"]
