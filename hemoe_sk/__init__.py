"""hemoe_sk: hierarchical, embedding-routed mixtures of experts for scikit-learn."""

__version__ = "0.1.0"

__all__ = ["__version__"]
