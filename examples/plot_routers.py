"""
How do the node routers split the plane?
========================================

A node of :class:`~hemoe_sk.HierarchicalEmbeddingMoEClassifier` routes each
sample by clustering the node's embeddings. This example fits every kind of
router on the same 2-D data, two interleaved half-moons and a round blob, and
draws, for each, the region routed to each cluster (hard routing, the colours)
and how sure soft routing is (pale where the largest routing probability is
low).

* ``KMeans`` and :class:`~hemoe_sk.cluster.DECClusterer` cut the plane by
  nearest centre (in the input, or in DEC's learned code space).
* :class:`~hemoe_sk.cluster.NeighborVoteRouter` lets clusterers without
  ``predict`` route: Ward's agglomerative clustering, or ``HDBSCAN``, which
  finds the number of clusters itself and marks low-density points as noise
  (drawn as crosses: they join the cluster of their nearest clustered point).
  A new point goes where most of its 15 nearest training points went.
* :class:`~hemoe_sk.cluster.MixtureOfAutoencodersClusterer` gives each
  cluster an autoencoder with a 1-D code, i.e. a curve; a point goes to the
  curve that reconstructs it best, which suits clusters lying along
  manifolds, such as the moons.

Run ``python examples/plot_routers.py [output.png]``; the figure is saved to
``routers.png`` by default. The adjusted Rand index of each router's
training clusters against the three true groups is printed and shown in the
titles.
"""

import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans  # noqa: E402
from sklearn.datasets import make_blobs, make_moons  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from hemoe_sk.cluster.dec import DECClusterer  # noqa: E402
from hemoe_sk.cluster.mixae import MixtureOfAutoencodersClusterer  # noqa: E402
from hemoe_sk.cluster.routing import NeighborVoteRouter, soft_assign  # noqa: E402

X_moons, y_moons = make_moons(n_samples=400, noise=0.06, random_state=0)
X_blob, _ = make_blobs(n_samples=150, centers=[[2.6, 1.6]], cluster_std=0.25,
                       random_state=0)
X = StandardScaler().fit_transform(np.vstack([X_moons, X_blob]))
y = np.concatenate([y_moons, np.full(len(X_blob), 2)])

routers = {
    "KMeans(3)": KMeans(3, n_init=10),
    "DECClusterer(3)": DECClusterer(
        3, hidden_dims=(32,), embedding_dim=2, pretrain_epochs=100, max_iter=500,
        batch_size=64,
    ),
    "NeighborVoteRouter(Ward, 3)": NeighborVoteRouter(
        AgglomerativeClustering(), n_clusters=3
    ),
    "NeighborVoteRouter(HDBSCAN)": NeighborVoteRouter(
        HDBSCAN(min_cluster_size=30, copy=True)
    ),
    "MixtureOfAutoencoders(3)": MixtureOfAutoencodersClusterer(
        3, hidden_dims=(32, 32), pretrain_epochs=100, init_epochs=20, max_epochs=200,
        batch_size=64,
    ),
}

xx, yy = np.meshgrid(
    np.linspace(X[:, 0].min() - 0.5, X[:, 0].max() + 0.5, 200),
    np.linspace(X[:, 1].min() - 0.5, X[:, 1].max() + 0.5, 200),
)
grid = np.c_[xx.ravel(), yy.ravel()]
colors = np.array(plt.get_cmap("tab10").colors)

out = sys.argv[1] if len(sys.argv) > 1 else "routers.png"
fig, axes = plt.subplots(1, len(routers), figsize=(4 * len(routers), 4.2),
                         constrained_layout=True)
for ax, (name, router) in zip(axes, routers.items(), strict=True):
    router.set_params(random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        router.fit(X)
    q = soft_assign(router, grid)
    hard = router.predict(grid)
    rgb = colors[hard % 10] * q.max(axis=1)[:, None] + (1 - q.max(axis=1)[:, None])
    ax.imshow(rgb.reshape(*xx.shape, 3), origin="lower", alpha=0.55,
              extent=(xx.min(), xx.max(), yy.min(), yy.max()), aspect="auto")
    labels = router.labels_
    ax.scatter(X[:, 0], X[:, 1], c=colors[labels % 10], s=8, edgecolors="k",
               linewidths=0.2)
    if isinstance(router, NeighborVoteRouter) and router.n_noise_:
        raw = router.clusterer_.labels_
        noise = raw < 0
        ax.scatter(X[noise, 0], X[noise, 1], marker="x", c="k", s=14, linewidths=0.8)
    ari = adjusted_rand_score(y, labels)
    ax.set_title(f"{name}\nARI {ari:.2f}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    print(f"{name:<30} ARI {ari:.3f}, clusters {len(np.unique(labels))}")
fig.suptitle("Routing regions (colour: hard route; pale: uncertain soft route); "
             "crosses: HDBSCAN noise", fontsize=11)
fig.savefig(out, dpi=100)
print(f"saved {out}")
