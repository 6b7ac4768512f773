"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

from .classifier import HierarchicalEmbeddingMoEClassifier
from .baselines import FineTunedEnsembleClassifier
from .cluster import (
    BalancedKMeans,
    ClassGroupClusterer,
    DECClusterer,
    MixtureOfAutoencodersClusterer,
    NeighborVoteRouter,
    WithinClassClusterer,
)
from .moe import MixtureOfExpertsClassifier
from .persistence import describe, load, save

__version__ = "0.1.0"

__all__ = [
    "BalancedKMeans",
    "ClassGroupClusterer",
    "DECClusterer",
    "FineTunedEnsembleClassifier",
    "HierarchicalEmbeddingMoEClassifier",
    "MixtureOfAutoencodersClusterer",
    "MixtureOfExpertsClassifier",
    "NeighborVoteRouter",
    "WithinClassClusterer",
    "__version__",
    "describe",
    "load",
    "save",
]
