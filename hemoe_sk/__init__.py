"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

from .baselines import FineTunedEnsembleClassifier
from .classifier import HierarchicalEmbeddingMoEClassifier
from .cluster import (
    BalancedKMeans,
    ClassGroupClusterer,
    DECClusterer,
    MixtureOfAutoencodersClusterer,
    NeighborVoteRouter,
    WithinClassClusterer,
)
from .moe import MixtureOfExpertsClassifier
from .moe_regressor import MixtureOfExpertsRegressor
from .persistence import describe, load, save
from .regressor import HierarchicalEmbeddingMoERegressor

# The one definition of the version: pyproject.toml reads it from here.
__version__ = "0.3.0"

__all__ = [
    "BalancedKMeans",
    "ClassGroupClusterer",
    "DECClusterer",
    "FineTunedEnsembleClassifier",
    "HierarchicalEmbeddingMoEClassifier",
    "HierarchicalEmbeddingMoERegressor",
    "MixtureOfAutoencodersClusterer",
    "MixtureOfExpertsClassifier",
    "MixtureOfExpertsRegressor",
    "NeighborVoteRouter",
    "WithinClassClusterer",
    "__version__",
    "describe",
    "load",
    "save",
]
