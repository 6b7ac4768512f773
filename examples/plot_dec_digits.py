"""
Deep Embedded Clustering of handwritten digits
==============================================

Cluster the 8x8 digits with :class:`~hemoe_sk.cluster.DECClusterer` (plain
DEC, and IDEC with ``gamma=0.1``) and with k-means on the pixels, and compare
them with the true digits: normalised mutual information (NMI) and
clustering accuracy (best one-to-one matching of clusters to digits).

The figure shows, left, the DEC training curve (``history_``: the fraction of
labels that changed between two target updates, and the KL loss), and right,
the contingency table of DEC clusters against digits, clusters reordered by
the matching.

The last lines pretrain the autoencoder once and refine it for several
numbers of clusters (``fit(X, autoencoder=...)``), as the hierarchical
classifier does at each tree node.

Run ``python examples/plot_dec_digits.py [output.png]``; the figure is saved to
``dec_digits.png`` by default.
"""

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from hemoe_sk.cluster import DECClusterer  # noqa: E402


def matching(y, labels, k):
    """Contingency table (clusters x classes) and the best matching."""
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (labels, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts, rows, cols


X, y = load_digits(return_X_y=True)
X = X / 16.0

models = {
    "k-means (pixels)": KMeans(n_clusters=10, n_init=10, random_state=0),
    "DEC": DECClusterer(n_clusters=10, random_state=0),
    "IDEC (gamma=0.1)": DECClusterer(n_clusters=10, gamma=0.1, random_state=0),
}
for name, model in models.items():
    start = time.perf_counter()
    labels = model.fit_predict(X)
    seconds = time.perf_counter() - start
    counts, rows, cols = matching(y, labels, 10)
    acc = counts[rows, cols].sum() / len(y)
    nmi = normalized_mutual_info_score(y, labels)
    print(f"{name:>17}: NMI {nmi:.3f}  accuracy {acc:.3f}  ({seconds:.1f} s)")

dec = models["DEC"]
hist = dec.history_
counts, rows, cols = matching(y, dec.labels_, 10)
order = rows[np.argsort(cols)]  # cluster matched to digit 0, 1, ...

out = sys.argv[1] if len(sys.argv) > 1 else "dec_digits.png"
fig, (ax_curve, ax_table) = plt.subplots(
    1, 2, figsize=(11, 4.5), constrained_layout=True
)
ax_curve.plot(
    hist["iteration"], hist["delta_label"], marker="o", label="labels changed"
)
ax_curve.axhline(dec.tol, color="grey", linestyle=":", label="tol")
ax_curve.set_yscale("log")
ax_curve.set_xlabel("refinement step")
ax_curve.set_ylabel("fraction of labels changed")
ax_kl = ax_curve.twinx()
ax_kl.plot(hist["iteration"], hist["kl"], color="tab:red", label="KL(P||Q)")
ax_kl.set_ylabel("KL(P||Q)", color="tab:red")
ax_curve.legend(loc="upper right")
ax_curve.set_title(f"DEC refinement ({dec.n_iter_} steps)")

im = ax_table.imshow(counts[order], cmap="Blues")
ax_table.set_xticks(range(10))
ax_table.set_yticks(range(10), [str(c) for c in order])
ax_table.set_xlabel("digit")
ax_table.set_ylabel("DEC cluster")
ax_table.set_title("clusters vs digits")
for i in range(10):
    for j in range(10):
        value = counts[order][i, j]
        if value:
            ax_table.text(j, i, value, ha="center", va="center", fontsize=7,
                          color="white" if value > counts.max() / 2 else "black")
fig.colorbar(im, ax=ax_table, shrink=0.8)
fig.savefig(out, dpi=120)
print(f"figure saved to {out}")

# Pretrain once, refine for several K (what the hierarchical classifier does).
start = time.perf_counter()
base = clone(dec).pretrain(X)
t_pre = time.perf_counter() - start
print(f"pretraining: {t_pre:.1f} s")
for k in (2, 3, 4, 5):
    start = time.perf_counter()
    fitted = clone(dec).set_params(n_clusters=k).fit(X, autoencoder=base.autoencoder_)
    sizes = np.bincount(fitted.labels_, minlength=k)
    seconds = time.perf_counter() - start
    print(f"K={k}: refinement {seconds:.1f} s, cluster sizes {sizes}")
