"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

from .classifier import HierarchicalEmbeddingMoEClassifier
from .cluster import DECClusterer
from .moe import MixtureOfExpertsClassifier
from .persistence import describe, load, save

__version__ = "0.1.0"

__all__ = [
    "DECClusterer",
    "HierarchicalEmbeddingMoEClassifier",
    "MixtureOfExpertsClassifier",
    "__version__",
    "describe",
    "load",
    "save",
]
