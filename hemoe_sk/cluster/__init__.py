"""Clustering estimators used to route samples between experts."""

from .dec import DECClusterer
from .mixae import MixtureOfAutoencodersClusterer
from .routing import NeighborVoteRouter

__all__ = ["DECClusterer", "MixtureOfAutoencodersClusterer", "NeighborVoteRouter"]
