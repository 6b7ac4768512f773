"""Clustering estimators used to route samples between experts."""

from .dec import DECClusterer
from .mixae import MixtureOfAutoencodersClusterer
from .routing import NeighborVoteRouter
from .signals import BalancedKMeans, ClassGroupClusterer, WithinClassClusterer

__all__ = [
    "BalancedKMeans",
    "ClassGroupClusterer",
    "DECClusterer",
    "MixtureOfAutoencodersClusterer",
    "NeighborVoteRouter",
    "WithinClassClusterer",
]
