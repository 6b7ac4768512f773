"""Clustering estimators used to route samples between experts."""

from .dec import DECClusterer

__all__ = ["DECClusterer"]
