"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

from .classifier import HierarchicalEmbeddingMoEClassifier
from .cluster import DECClusterer
from .moe import MixtureOfExpertsClassifier

__version__ = "0.1.0"

__all__ = [
    "DECClusterer",
    "HierarchicalEmbeddingMoEClassifier",
    "MixtureOfExpertsClassifier",
    "__version__",
]
