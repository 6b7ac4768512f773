"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

from .baselines import FineTunedEnsembleClassifier
from .classifier import HierarchicalEmbeddingMoEClassifier
from .cluster import DECClusterer, MixtureOfAutoencodersClusterer, NeighborVoteRouter
from .moe import MixtureOfExpertsClassifier
from .persistence import describe, load, save

__version__ = "0.1.0"

__all__ = [
    "DECClusterer",
    "FineTunedEnsembleClassifier",
    "HierarchicalEmbeddingMoEClassifier",
    "MixtureOfAutoencodersClusterer",
    "MixtureOfExpertsClassifier",
    "NeighborVoteRouter",
    "__version__",
    "describe",
    "load",
    "save",
]
