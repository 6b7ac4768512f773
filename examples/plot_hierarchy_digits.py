"""Grow a tree of experts on a coarse-label digits task.

The ten digits are grouped into three coarse labels, so every label hides
several sub-populations: the setting hemoe_sk is built for. The script fits
the hierarchical classifier and its own base network (``max_depth=0``) on the
same split, prints the tree, the accuracies and the leaf each test sample
reaches, and saves a bar chart of leaf sizes (``hierarchy_leaves.png``).

Run from the repository root::

    python examples/plot_hierarchy_digits.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hemoe_sk import HierarchicalEmbeddingMoEClassifier

X, digit = load_digits(return_X_y=True)
X = X / 16.0
coarse = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])[digit]
X_train, X_test, y_train, y_test, d_train, d_test = train_test_split(
    X, coarse, digit, test_size=0.3, stratify=digit, random_state=0
)

tree = HierarchicalEmbeddingMoEClassifier(random_state=0).fit(X_train, y_train)
base = HierarchicalEmbeddingMoEClassifier(max_depth=0, random_state=0).fit(
    X_train, y_train
)
print(tree.export_text())
print(f"\ntree accuracy {tree.score(X_test, y_test):.4f}  "
      f"base network {base.score(X_test, y_test):.4f}")

# Which digits end up in which leaf?
leaves = tree.apply(X_test)
for leaf in np.unique(leaves):
    digits, counts = np.unique(d_test[leaves == leaf], return_counts=True)
    print(f"leaf {leaf}: " + ", ".join(f"{d}x{c}" for d, c in zip(digits, counts)))

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover
    print("matplotlib is not installed: no plot")
else:
    fig, ax = plt.subplots(figsize=(5, 3))
    ids, sizes = np.unique(leaves, return_counts=True)
    ax.bar([str(i) for i in ids], sizes)
    ax.set_xlabel("leaf id")
    ax.set_ylabel("test samples")
    ax.set_title("Where test samples are routed")
    fig.tight_layout()
    fig.savefig("hierarchy_leaves.png", dpi=100)
    print("saved hierarchy_leaves.png")
