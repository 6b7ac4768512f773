"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

from .classifier import HierarchicalEmbeddingMoEClassifier
from .baselines import FineTunedEnsembleClassifier
from .cluster import DECClusterer, MixtureOfAutoencodersClusterer, NeighborVoteRouter
from .moe import MixtureOfExpertsClassifier
from .persistence import describe, load, save
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

__version__ = "0.1.0"

__all__ = [
    "AttributionDisplay",
    "DECClusterer",
    "FineTunedEnsembleClassifier",
    "HierarchicalEmbeddingMoEClassifier",
    "MixtureOfAutoencodersClusterer",
    "MixtureOfExpertsClassifier",
    "NeighborVoteRouter",
    "RoutingDisplay",
    "TreeDisplay",
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
