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
from .inspection import (
    AttributionDisplay,
    RoutingDisplay,
    TreeDisplay,
    explain_routes,
    export_routing,
    format_route,
    route_attributions,
    routing_module,
)
from .moe import MixtureOfExpertsClassifier
from .moe_regressor import MixtureOfExpertsRegressor
from .persistence import describe, load, save
from .regressor import HierarchicalEmbeddingMoERegressor

__version__ = "0.3.0"

__all__ = [
    "AttributionDisplay",
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
    "RoutingDisplay",
    "TreeDisplay",
    "WithinClassClusterer",
    "__version__",
    "describe",
    "explain_routes",
    "export_routing",
    "format_route",
    "load",
    "route_attributions",
    "routing_module",
    "save",
]
