"""Explaining fitted models: route paths, routing CSVs, gates, routing
attributions and displays.

A layer *above* the estimators, as scikit-learn's ``tree/_export.py`` and
its ``Display.from_estimator`` classes are: it reads a fitted estimator and
never changes it, and no estimator module imports it. Everything is
duck-typed on what the estimator has, a fitted ``tree_`` (the hierarchical
classifier and regressor) or ``gate_weights`` (the flat mixtures), so one
function serves them all; a :class:`~sklearn.pipeline.Pipeline` ending in
one is accepted too.

* Routes (``_routes``): :func:`explain_routes` -- per sample, the path root
  to leaf with every child's routing probability at every node, read from
  the tree's own walk; :func:`format_route` -- one record as text;
  :func:`export_routing` -- one CSV row per sample.
* Gates (``_gates``): :func:`moe_label_expert_matrix`,
  :func:`plot_expert_heatmap` and :func:`export_gates` -- a flat mixture's
  gates by label and per sample.
* Attributions (``_attributions``): :func:`routing_module` -- a node's soft
  assignment as a differentiable torch module; :func:`route_attributions`
  -- which features push a sample toward its cluster (captum).
* Displays (``_displays``, ``_attribution_display``): :class:`RoutingDisplay`,
  :class:`TreeDisplay`, :class:`AttributionDisplay` -- matplotlib displays
  in scikit-learn's style (``from_estimator``, ``plot``, ``ax_``,
  ``figure_``).

matplotlib, captum and pandas are optional: each is imported only where it
is used, with an error naming the extra to install.
"""

from ._attribution_display import AttributionDisplay
from ._attributions import route_attributions, routing_module
from ._displays import RoutingDisplay, TreeDisplay
from ._gates import export_gates, moe_label_expert_matrix, plot_expert_heatmap
from ._routes import explain_routes, export_routing, format_route

__all__ = [
    "AttributionDisplay",
    "RoutingDisplay",
    "TreeDisplay",
    "explain_routes",
    "export_gates",
    "export_routing",
    "format_route",
    "moe_label_expert_matrix",
    "plot_expert_heatmap",
    "route_attributions",
    "routing_module",
]
