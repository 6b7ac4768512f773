"""Explain a tree's routes on digits: the tree, where each digit goes, and why.

The script fits the hierarchical classifier on scikit-learn's 8x8 digits with
a small convolutional embedder and k-means routers (``split_test="none"``: the
best eligible split is always kept, so that there is a tree to read), then
writes

* ``inspection_tree.png``: the tree, one pie per node sized by its training
  samples and split by digit (:class:`~hemoe_sk.inspection.TreeDisplay`);
* ``inspection_routing.png``: test samples by digit against the leaf they
  reach, with counts (:class:`~hemoe_sk.inspection.RoutingDisplay`);
* ``inspection_attributions.png``: three test images from different leaves
  with, for every node on their path, the Grad-CAM map of the routing
  probability of the child they take
  (:class:`~hemoe_sk.inspection.AttributionDisplay`, needs captum);
* ``inspection_routes.csv``: one row per test sample
  (:func:`~hemoe_sk.inspection.export_routing`),

and prints the three samples' routes (:func:`~hemoe_sk.inspection.format_route`).

Run from the repository root (about 20 seconds on two CPU cores)::

    python examples/plot_inspection_digits.py [output folder]
"""

import os
import sys

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.inspection import (
    AttributionDisplay,
    RoutingDisplay,
    TreeDisplay,
    explain_routes,
    export_routing,
    format_route,
)
from hemoe_sk.nn import ConvEmbedder

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)

clf = HierarchicalEmbeddingMoEClassifier(
    ConvEmbedder,
    embedder__channels=(8, 16),
    embedder__embedding_dim=32,
    clusterer=KMeans(n_init=5),
    n_clusters_grid=(2, 3, 4),
    split_test="none",  # always keep the best split: this example is about reading a tree
    max_depth=2,
    min_cluster_size=40,
    max_epochs=8,
    expert_max_epochs=4,
    lr=3e-3,
    random_state=0,
).fit(X_train, y_train)
print(clf.export_text())
print(f"\ntest accuracy: {clf.score(X_test, y_test):.4f}\n")

export_routing(clf, X_test, y_test, os.path.join(out, "inspection_routes.csv"))

# Three test samples from different leaves where the tree has several.
leaves = clf.apply(X_test)
picks = []
for leaf in np.unique(leaves):
    picks.append(int(np.flatnonzero(leaves == leaf)[0]))
picks = (picks + [i for i in range(len(X_test)) if i not in picks])[:3]
for record, i in zip(explain_routes(clf, X_test[picks]), picks):
    record["sample"] = i  # number the test rows, not the three picked
    print(format_route(record), end="\n\n")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover
    print("matplotlib is not installed: no pictures")
    sys.exit(0)

tree = TreeDisplay.from_estimator(clf)
tree.figure_.tight_layout()
tree.figure_.savefig(os.path.join(out, "inspection_tree.png"), dpi=120)

routing = RoutingDisplay.from_estimator(clf, X_test, y_test)
routing.figure_.tight_layout()
routing.figure_.savefig(os.path.join(out, "inspection_routing.png"), dpi=120)

if clf.n_leaves_ > 1:
    try:
        attributions = AttributionDisplay.from_estimator(
            clf, X_test[picks], row_labels=[f"test {i}: digit {y_test[i]}" for i in picks]
        )
    except ImportError as exc:  # captum missing
        print(exc)
    else:
        attributions.figure_.suptitle(
            "Grad-CAM of the routing probability of the child taken", fontsize=9
        )
        attributions.figure_.tight_layout()
        attributions.figure_.savefig(
            os.path.join(out, "inspection_attributions.png"), dpi=120
        )
plt.close("all")
print(f"wrote the PNGs and inspection_routes.csv to {out}")
