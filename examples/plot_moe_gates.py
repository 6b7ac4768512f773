"""
Which expert does the gate pick for each digit?
===============================================

Fit :class:`~hemoe_sk.moe.MixtureOfExpertsClassifier` on the digits data with
soft, top-k and label-guided gating, and draw for each one the mean gate
weight of every expert over the test images of every digit
(:func:`hemoe_sk.inspection.plot_expert_heatmap`).

* Soft gating (Jacobs et al., 1991) is free to split the work as it likes; it
  often leaves some experts unused.
* Top-k gating (Shazeer et al., 2017) keeps two experts per image, spread by
  its load-balancing losses.
* Guided gating assigns the digits in blocks ({0,1,2}, {3,4,5}, {6,7},
  {8,9}) to the four experts during training; the outlined cells are those
  blocks, and the heatmap is block-diagonal when the gate learnt them. The
  labels are not used at prediction time.

Run ``python examples/plot_moe_gates.py [output.png]``; the figure is saved to
``moe_gates.png`` by default. The per-sample gate weights of the guided model
are also written to ``moe_gates.csv``.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from hemoe_sk import MixtureOfExpertsClassifier  # noqa: E402
from hemoe_sk.inspection import export_gates, plot_expert_heatmap  # noqa: E402

X, y = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)

out = sys.argv[1] if len(sys.argv) > 1 else "moe_gates.png"
fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), constrained_layout=True)
for ax, gating in zip(axes, ["soft", "topk", "guided"], strict=True):
    clf = MixtureOfExpertsClassifier(gating=gating, random_state=0)
    clf.fit(X_train, y_train)
    plot_expert_heatmap(clf, X_test, y_test, ax=ax)
    ax.set_title(f"{gating}: test accuracy {clf.score(X_test, y_test):.3f}")
    print(
        f"{gating:>7}: accuracy {clf.score(X_test, y_test):.4f}, "
        f"expert usage {clf.expert_usage_.round(3)}"
    )
    if gating == "guided":
        export_gates(clf, X_test, y_test, out.rsplit(".", 1)[0] + ".csv")
fig.savefig(out, dpi=110)
print(f"saved {out}")
