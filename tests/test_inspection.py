"""Route paths, routing CSV, differentiable routing, attributions and displays."""

import copy
import csv
import importlib.util
import sys
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from _helpers import CLASSIC_NET
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.datasets import load_digits, make_classification
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import hemoe_sk  # noqa: E402
from hemoe_sk import (  # noqa: E402
    DECClusterer,
    HierarchicalEmbeddingMoEClassifier,
    HierarchicalEmbeddingMoERegressor,
    MixtureOfAutoencodersClusterer,
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    NeighborVoteRouter,
)
from hemoe_sk.cli import main  # noqa: E402
from hemoe_sk.inspection import (  # noqa: E402
    AttributionDisplay,
    RoutingDisplay,
    TreeDisplay,
    explain_routes,
    export_routing,
    format_route,
    moe_label_expert_matrix,
    route_attributions,
    routing_module,
)
from hemoe_sk.nn import ConvEmbedder, DeepMoEEmbedder, embed  # noqa: E402
from hemoe_sk.nn.build import build_embedder_net  # noqa: E402
from hemoe_sk.nn.training import torch_seed  # noqa: E402
from hemoe_sk.node import Router  # noqa: E402

needs_captum = pytest.mark.skipif(
    importlib.util.find_spec("captum") is None,
    reason="routing attributions need captum (pip install hemoe_sk[explain])",
)




def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y)


TAB = dict(**CLASSIC_NET,
    clusterer=KMeans(n_init=3),
    n_clusters_grid=(2, 3),
    split_test="none",
    max_depth=2,
    min_cluster_size=20,
    max_epochs=6,
    expert_max_epochs=2,
    lr=0.01,
    embedder__hidden_dims=(16,),
    random_state=0,
)


@pytest.fixture(scope="module")
def tab_data():
    X, y = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_redundant=0,
        n_classes=3, n_clusters_per_class=2, class_sep=2.0, random_state=0,
    )
    names = np.array(["ant", "bee", "cat"])[y]
    return X.astype(np.float32), names


@pytest.fixture(scope="module")
def tab(tab_data):
    X, y = tab_data
    clf = _fit(HierarchicalEmbeddingMoEClassifier(**TAB), X, y)
    assert clf.n_leaves_ > 1, "the fixture must grow a split tree"
    assert clf.depth_ == 2, "the fixture must route twice on some paths"
    return clf


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:360] / 16.0).astype(np.float32), y[:360]


@pytest.fixture(scope="module")
def conv(digits):
    X, y = digits
    clf = HierarchicalEmbeddingMoEClassifier(
        ConvEmbedder,
        embedder__channels=(4, 8),
        embedder__embedding_dim=16,
        clusterer=KMeans(n_init=3),
        n_clusters_grid=(2,),
        split_test="none",
        max_depth=1,
        min_cluster_size=30,
        max_epochs=3,
        expert_max_epochs=1,
        lr=0.01,
        random_state=0,
    )
    clf = _fit(clf, X, y)
    assert clf.n_leaves_ > 1, "the fixture must grow a split tree"
    return clf


# -- route paths ---------------------------------------------------------------


def test_routes_agree_with_apply_and_decision_path(tab, tab_data):
    X, _ = tab_data
    records = explain_routes(tab, X)
    assert len(records) == len(X)
    assert_array_equal([r["leaf"] for r in records], tab.apply(X))
    indicator = tab.decision_path(X).toarray()
    nodes = tab.tree_.nodes
    depths_seen = set()
    for i, r in enumerate(records):
        assert r["sample"] == i
        assert sorted(r["path"]) == np.flatnonzero(indicator[i]).tolist()
        assert r["path"][0] == 0 and r["path"][-1] == r["leaf"]
        assert len(r["steps"]) == len(r["path"]) - 1 == nodes[r["leaf"]].depth
        depths_seen.add(len(r["steps"]))
        product = 1.0
        for step, parent, child in zip(r["steps"], r["path"], r["path"][1:]):
            assert step["node"] == parent and step["child"] == child
            assert step["children"] == nodes[parent].children
            assert child in step["children"]
            assert_allclose(sum(step["routing_proba"]), 1.0, rtol=1e-9)
            assert step["proba"] == step["routing_proba"][step["children"].index(child)]
            counts = nodes[child].class_counts
            assert step["child_class_counts"] == {
                c: int(n) for c, n in zip(tab.classes_.tolist(), counts) if n
            }
            assert step["child_n_samples"] == nodes[child].n_samples
            product *= step["proba"]
        assert_allclose(r["path_proba"], product)
    assert depths_seen >= {1, 2} or depths_seen == {2}


def test_routes_report_the_leaf_and_the_prediction(tab, tab_data):
    X, _ = tab_data
    records = explain_routes(tab, X[:40], top_k=2)
    proba = tab.predict_proba(X[:40])
    assert [r["prediction"] for r in records] == tab.predict(X[:40]).tolist()
    assert_allclose([r["prediction_proba"] for r in records], proba.max(axis=1))
    # The leaf's top classes under hard routing are those of the model with
    # hard routing.
    hard = tab.tree_.predict_proba(
        np.asarray(X[:40], dtype=np.float32), routing="hard"
    )
    for r, p in zip(records, hard):
        assert len(r["leaf_classes"]) == 2
        assert r["leaf_classes"][0] == tab.classes_[p.argmax()]
        assert_allclose(r["leaf_proba"][0], p.max())
        assert r["leaf_proba"][0] >= r["leaf_proba"][1]


def test_routes_frame_and_text(tab, tab_data):
    X, _ = tab_data
    records = explain_routes(tab, X[:5])
    frame = explain_routes(tab, X[:5], as_frame=True)
    assert list(frame["leaf"]) == tab.apply(X[:5]).tolist()
    assert list(frame.columns[:3]) == ["sample", "leaf", "path"]
    assert {"p_depth_0", "p_depth_1", "path_proba", "predicted"} <= set(frame.columns)
    text = format_route(records[0])
    first = text.splitlines()
    assert first[0].startswith(f"sample 0 -> leaf {records[0]['leaf']}")
    assert len(first) == 2 + 2 * len(records[0]["steps"])
    for node in records[0]["path"]:
        assert f"node {node}" in text or f"leaf {node}" in text
    with pytest.raises(ValueError, match="top_k"):
        explain_routes(tab, X[:2], top_k=0)
    with pytest.raises(TypeError, match="HierarchicalEmbeddingMoEClassifier"):
        explain_routes(KMeans().fit(X), X[:2])
    with pytest.raises(TypeError, match="HierarchicalEmbeddingMoERegressor"):
        explain_routes(object(), X[:2])


# -- routing CSV ---------------------------------------------------------------


def test_export_routing_csv(tab, tab_data, tmp_path):
    X, y = tab_data
    path = export_routing(tab, X, y, tmp_path / "routes.csv")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == len(X)
    assert list(rows[0])[:4] == ["label", "sample", "leaf", "path"]
    assert [r["label"] for r in rows] == y.tolist()
    assert [int(r["leaf"]) for r in rows] == tab.apply(X).tolist()
    assert [r["predicted"] for r in rows] == tab.predict(X).tolist()
    for r in rows:
        path_nodes = [int(v) for v in r["path"].split(">")]
        levels = [float(r[f"p_depth_{d}"]) for d in range(len(path_nodes) - 1)]
        assert all(0.0 < p <= 1.0 for p in levels)
        assert_allclose(np.prod(levels), float(r["path_proba"]), rtol=1e-4)
        for d in range(len(path_nodes) - 1, tab.depth_):
            assert r[f"p_depth_{d}"] == ""
    no_label = export_routing(tab, X[:3], None, tmp_path / "nolabel.csv")
    assert next(csv.reader(open(no_label)))[0] == "sample"
    with pytest.raises(ValueError, match="one label per sample"):
        export_routing(tab, X[:3], y[:2], tmp_path / "bad.csv")


def test_export_routing_flat_mixture(tab_data, tmp_path):
    X, y = tab_data
    moe = MixtureOfExpertsClassifier(
        n_experts=3, expert_hidden=(8,), gate_hidden=(), max_epochs=3, lr=0.03,
        random_state=0,
    ).fit(X, y)
    rows = list(csv.DictReader(open(export_routing(moe, X, y, tmp_path / "moe.csv"))))
    gates = moe.gate_weights(X)
    assert [int(r["leaf"]) for r in rows] == gates.argmax(axis=1).tolist()
    assert [r["predicted"] for r in rows] == moe.predict(X).tolist()
    g = np.array([[float(r[f"gate_{e}"]) for e in range(3)] for r in rows])
    # The CSV writes each of the 3 gates to 6 decimals: the sum is off by up
    # to 1.5e-6 (1e-6 measured).
    assert_allclose(g.sum(axis=1), 1.0, atol=2e-5)
    assert_allclose([float(r["p_depth_0"]) for r in rows], g.max(axis=1), rtol=1e-4)
    disp = RoutingDisplay.from_estimator(moe, X, y)
    assert disp.counts.shape == (3, len(np.unique(gates.argmax(axis=1))))
    plt.close(disp.figure_)


# -- differentiable routing ----------------------------------------------------


def _router_case(name, E, seed=0):
    """A fitted Router of kind ``name`` on embeddings ``E``."""
    if name == "kmeans":
        return Router(KMeans(2, n_init=3, random_state=seed).fit(E), None, 2)
    if name == "kmeans+pca-whiten":
        pca = PCA(3, whiten=True).fit(E)
        return Router(KMeans(3, n_init=3, random_state=seed).fit(pca.transform(E)), pca, 3)
    if name == "kmeans+scaler":
        sc = StandardScaler().fit(E)
        return Router(KMeans(2, n_init=3, random_state=seed).fit(sc.transform(E)), sc, 2)
    if name.startswith("gmm-"):
        gmm = GaussianMixture(2, covariance_type=name[4:], random_state=seed).fit(E)
        return Router(gmm, None, 2)
    if name == "dec":
        dec = DECClusterer(
            n_clusters=2, hidden_dims=(8,), embedding_dim=3, pretrain_epochs=3,
            max_iter=20, alpha=2.0, random_state=seed,
        ).fit(E)
        return Router(dec, None, 2)
    if name == "dec+pca":
        pca = PCA(4).fit(E)
        dec = DECClusterer(
            n_clusters=3, hidden_dims=(8,), embedding_dim=2, pretrain_epochs=3,
            max_iter=20, random_state=seed,
        ).fit(pca.transform(E))
        return Router(dec, pca, 3)
    if name == "mixae":
        mixae = MixtureOfAutoencodersClusterer(
            n_clusters=2, hidden_dims=(6,), embedding_dim=2, max_epochs=2,
            pretrain_epochs=2, random_state=seed,
        ).fit(E)
        return Router(mixae, None, 2)
    raise AssertionError(name)


ROUTERS = [
    "kmeans", "kmeans+pca-whiten", "kmeans+scaler", "gmm-full", "gmm-tied",
    "gmm-diag", "gmm-spherical", "dec", "dec+pca", "mixae",
]


@pytest.mark.parametrize("name", ROUTERS)
def test_routing_module_equals_router_predict_proba(tab, tab_data, name):
    X, _ = tab_data
    clf = copy.deepcopy(tab)
    root = clf.tree_.nodes[0]
    E = embed(root.embedder, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.router = _router_case(name, E)
    expected = root.router.predict_proba(E)
    module = routing_module(clf, 0).eval()
    with torch.no_grad():
        got = module(torch.as_tensor(X)).numpy()
    assert got.shape == expected.shape
    assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # "similarity" is the log-kernel whose softmax is the probability.
    sim = routing_module(clf, 0, output="similarity").eval()
    with torch.no_grad():
        s = sim(torch.as_tensor(X)).double()
    assert_allclose(torch.softmax(s, dim=1).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_routing_module_gradients_reach_the_input(tab, tab_data):
    X, _ = tab_data
    module = routing_module(tab, 0).eval()
    x = torch.as_tensor(X[:4]).requires_grad_(True)
    module(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "router, match",
    [
        (lambda E: Router(NeighborVoteRouter(AgglomerativeClustering(2)).fit(E),
                          None, 2), "NeighborVoteRouter"),
        (lambda E: Router(KMeans(2, n_init=2, random_state=0).fit(E),
                          Normalizer().fit(E), 2), "Normalizer"),
    ],
)
def test_router_without_differentiable_form_is_named(tab, tab_data, router, match):
    X, _ = tab_data
    clf = copy.deepcopy(tab)
    root = clf.tree_.nodes[0]
    root.router = router(embed(root.embedder, X))
    with pytest.raises(TypeError, match=match):
        routing_module(clf, 0)
    with pytest.raises(TypeError, match=match):
        route_attributions(clf, X[:2], node=0)


# -- attributions --------------------------------------------------------------


@needs_captum
def test_integrated_gradients_shape_determinism_completeness(tab, tab_data):
    X, _ = tab_data
    inner = [n.node_id for n in tab.tree_.nodes if not n.is_leaf]
    for node in inner:
        a = route_attributions(tab, X[:6], node=node, n_steps=1024)
        assert a.shape == X[:6].shape and np.isfinite(a).all()
        assert_array_equal(a, route_attributions(tab, X[:6], node=node, n_steps=1024))
        # Completeness: the attributions add up to f(x) - f(baseline) for the
        # probability of the cluster each sample is routed to, up to the
        # path integral's discretisation error, which falls as 1/n_steps
        # (measured: 1.9e-3 at 64 steps, 4.6e-4 at 256, 1.4e-4 at 1024).
        n = tab.tree_.nodes[node]
        target = n.router.predict(embed(n.embedder, X[:6]))
        module = routing_module(tab, node).eval()
        with torch.no_grad():
            fx = module(torch.as_tensor(X[:6])).numpy()
            f0 = module(torch.zeros_like(torch.as_tensor(X[:6]))).numpy()
        rows = np.arange(6)
        assert_allclose(a.sum(axis=1), fx[rows, target] - f0[rows, target], atol=2e-3)
    # Another cluster as the target changes the sign of a two-way split.
    two_way = next(i for i in inner if len(tab.tree_.nodes[i].children) == 2)
    own = route_attributions(tab, X[:4], node=two_way)
    n = tab.tree_.nodes[two_way]
    other = 1 - n.router.predict(embed(n.embedder, X[:4]))
    assert_allclose(route_attributions(tab, X[:4], node=two_way, target=other), -own,
                    atol=1e-6)


@needs_captum
def test_gradcam_on_conv_embedder(conv, digits):
    X, _ = digits
    a = route_attributions(conv, X[:5], node=0)
    assert a.shape == (5, 64)
    assert (a >= 0).all() and (a.sum(axis=1) > 0).any()
    assert_array_equal(a, route_attributions(conv, X[:5], node=0))
    sim = route_attributions(conv, X[:5], node=0, output="similarity")
    assert sim.shape == (5, 64)
    ig = route_attributions(conv, X[:5], node=0, method="integrated_gradients")
    assert ig.shape == (5, 64) and not np.allclose(ig, a)
    # The network is left as it was: its training-mode flags are restored.
    module = conv.tree_.nodes[0].embedder.module_
    for mode in (True, False):
        module.train(mode)
        route_attributions(conv, X[:2], node=0)
        assert all(m.training == mode for m in module.modules())


@needs_captum
def test_gradcam_on_deepmoe_embedder(conv, digits):
    X, y = digits
    clf = copy.deepcopy(conv)
    root = clf.tree_.nodes[0]
    net = build_embedder_net(
        DeepMoEEmbedder, n_features=64, n_classes=10,
        embedder_params={"channels": (4, 8), "embedding_channels": (4,),
                         "embedding_dim": 8, "hidden_dim": 16},
        max_epochs=1,
    )
    with torch_seed(0):
        net.initialize()
    root.embedder = net
    root.router = Router(KMeans(2, n_init=3, random_state=0).fit(embed(net, X)), None, 2)
    module = routing_module(clf, 0).eval()
    with torch.no_grad():
        assert_allclose(module(torch.as_tensor(X[:20])).numpy(),
                        root.router.predict_proba(embed(net, X[:20])), rtol=1e-4)
    a = route_attributions(clf, X[:3], node=0)
    assert a.shape == (3, 64) and (a >= 0).all()
    assert_array_equal(a, route_attributions(clf, X[:3], node=0))


def test_missing_captum_names_the_extra(tab, tab_data, monkeypatch):
    X, _ = tab_data
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"pip install hemoe_sk\[explain\]"):
        route_attributions(tab, X[:2], node=0)


def test_bad_node_and_target_give_clear_errors(tab, tab_data):
    X, _ = tab_data
    leaf = tab.tree_.leaves[0]
    inner = [n.node_id for n in tab.tree_.nodes if not n.is_leaf]
    with pytest.raises(ValueError, match=rf"node={leaf} is a leaf.*inner nodes"):
        route_attributions(tab, X[:2], node=leaf)
    with pytest.raises(ValueError, match=r"node=99 does not exist.*" + str(inner[0])):
        route_attributions(tab, X[:2], node=99)
    with pytest.raises(ValueError, match="node=-1 does not exist"):
        routing_module(tab, -1)
    with pytest.raises(TypeError, match="integer node id"):
        route_attributions(tab, X[:2], node="0")
    with pytest.raises(TypeError, match="integer node id"):
        route_attributions(tab, X[:2], node=0.0)
    k = len(tab.tree_.nodes[0].children)
    with pytest.raises(ValueError, match=rf"target must hold cluster indices in 0..{k - 1}"):
        route_attributions(tab, X[:2], node=0, target=k)
    with pytest.raises(ValueError, match="needs a convolutional embedder"):
        route_attributions(tab, X[:2], node=0, method="gradcam")
    with pytest.raises(ValueError, match="method must be"):
        route_attributions(tab, X[:2], node=0, method="shap")
    with pytest.raises(ValueError, match="output must be"):
        routing_module(tab, 0, output="logits")
    with pytest.raises(ValueError, match="features"):
        route_attributions(tab, X[:2, :3], node=0)


def test_single_leaf_tree_has_nothing_to_attribute(tab_data):
    X, y = tab_data
    clf = HierarchicalEmbeddingMoEClassifier(max_depth=0, max_epochs=1,
                                             random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="single leaf"):
        route_attributions(clf, X[:2], node=0)
    assert [r["path"] for r in explain_routes(clf, X[:2])] == [[0], [0]]


# -- displays ------------------------------------------------------------------


def test_routing_display(tab, tab_data, tmp_path):
    X, y = tab_data
    disp = RoutingDisplay.from_estimator(tab, X, y)
    leaves = tab.apply(X)
    assert disp.counts.sum() == len(X)
    for i, label in enumerate(disp.labels):
        for j, leaf in enumerate(disp.leaves):
            assert disp.counts[i, j] == np.sum((y == label) & (leaves == leaf))
            assert disp.text_[i, j].get_text() == str(disp.counts[i, j])
    assert disp.ax_.figure is disp.figure_
    disp.figure_.savefig(tmp_path / "routing.png")
    assert (tmp_path / "routing.png").stat().st_size > 1000
    fig, ax = plt.subplots()
    assert RoutingDisplay.from_estimator(tab, X, y, ax=ax, colorbar=False).ax_ is ax
    plt.close("all")


def test_tree_display(tab, tmp_path):
    disp = TreeDisplay.from_estimator(tab)
    pos = disp.positions_
    assert pos.shape == (tab.tree_.node_count, 2)
    for node in tab.tree_.nodes:
        assert pos[node.node_id, 1] == pytest.approx(-1.3 * node.depth)
        if node.children:
            assert pos[node.node_id, 0] == pytest.approx(
                np.mean([pos[c, 0] for c in node.children])
            )
    # one wedge per class present at every node
    wedges = [p for p in disp.ax_.patches if type(p).__name__ == "Wedge"]
    assert len(wedges) == sum(int((n.class_counts > 0).sum()) for n in tab.tree_.nodes)
    disp.figure_.savefig(tmp_path / "tree.png")
    assert (tmp_path / "tree.png").stat().st_size > 1000
    plt.close("all")


@needs_captum
def test_attribution_display_images_and_bars(conv, digits, tab, tab_data, tmp_path):
    X, _ = digits
    disp = AttributionDisplay.from_estimator(conv, X[:3])
    assert disp.ax_.shape == (3, 2) and disp.images.shape == (3, 1, 8, 8)
    assert_allclose(disp.attributions[:, 0], route_attributions(conv, X[:3], node=0))
    assert disp.titles[0, 0].startswith("node 0 -> ")
    disp.figure_.savefig(tmp_path / "attr.png")
    Xt, _ = tab_data
    bars = AttributionDisplay.from_estimator(tab, Xt[:2], feature_names=list("abcdef"))
    assert bars.images is None and bars.ax_.shape == (2, tab.depth_)
    labels = {t.get_text() for t in bars.ax_[0, 0].get_yticklabels()}
    assert labels <= set("abcdef") and labels
    one = AttributionDisplay.from_estimator(tab, Xt[:2], node=0)
    assert one.ax_.shape == (2, 1)
    plt.close("all")


# -- the regressors --------------------------------------------------------------
#
# The functions read ``tree_`` (or ``gate_weights``), not the class, so the
# hierarchical regressor and the flat regression mixture are served too.

REG = dict(
    clusterer=KMeans(n_init=3),
    n_clusters_grid=(2,),
    split_test="none",
    max_depth=2,
    min_cluster_size=20,
    max_epochs=8,
    expert_max_epochs=3,
    lr=0.01,
    embedder__hidden_dims=(16,),
    random_state=0,
)


def _piecewise(n=300, seed=0, n_outputs=1):
    """Two linear regimes split on the first feature, on a large scale."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    y = np.where(X[:, 0] > 0, 30 * X[:, 1] + 100, -20 * X[:, 1] - 50)
    y = y + 0.1 * rng.randn(n)
    return X, (y if n_outputs == 1 else np.column_stack([y, -2 * y]))


@pytest.fixture(scope="module")
def reg():
    X, y = _piecewise()
    est = _fit(HierarchicalEmbeddingMoERegressor(**REG), X, y)
    assert est.n_leaves_ > 2, "the fixture must grow a tree routed twice"
    return est, X, y


def test_regressor_routes(reg):
    est, X, _ = reg
    records = explain_routes(est, X)
    assert_array_equal([r["leaf"] for r in records], est.apply(X))
    indicator = est.decision_path(X).toarray()
    nodes = est.tree_.nodes
    for i, r in enumerate(records):
        assert sorted(r["path"]) == np.flatnonzero(indicator[i]).tolist()
        assert len(r["steps"]) == nodes[r["leaf"]].depth
        for step, child in zip(r["steps"], r["path"][1:]):
            # A regressor's nodes have no classes to count.
            assert "child_class_counts" not in step
            assert step["child"] == child
            assert step["child_n_samples"] == nodes[child].n_samples
            assert_allclose(sum(step["routing_proba"]), 1.0, rtol=1e-9)
        assert_allclose(r["path_proba"], np.prod([s["proba"] for s in r["steps"]]))
        assert "leaf_classes" not in r and "prediction_proba" not in r
    assert_allclose([r["prediction"] for r in records], est.predict(X))
    # Under hard routing the prediction is the reached leaf's.
    hard = copy.deepcopy(est).set_params(routing="hard")
    assert_allclose([r["leaf_prediction"] for r in records], hard.predict(X), rtol=1e-6)
    # The leaves' predictions are on the targets' scale (about -70..130).
    assert np.ptp([r["leaf_prediction"] for r in records]) > 50
    text = format_route(records[0])
    assert text.startswith(f"sample 0 -> leaf {records[0]['leaf']}")
    assert "predicts" in text and "classes" not in text
    assert len(text.splitlines()) == 2 + 2 * len(records[0]["steps"])
    frame = explain_routes(est, X[:5], as_frame=True)
    assert list(frame["leaf"]) == est.apply(X[:5]).tolist()
    assert_allclose(frame["predicted"], est.predict(X[:5]))


def test_regressor_routing_csv(reg, tmp_path):
    est, X, y = reg
    rows = list(csv.DictReader(open(export_routing(est, X, y, tmp_path / "r.csv"))))
    assert list(rows[0])[:4] == ["target", "sample", "leaf", "path"]
    assert list(rows[0])[-2:] == ["leaf_prediction", "predicted"]
    assert [int(r["leaf"]) for r in rows] == est.apply(X).tolist()
    # written to 6 significant digits: off by up to 5e-6 relative (measured
    # 5e-6), so compared at 1e-4
    assert_allclose([float(r["target"]) for r in rows], y, rtol=1e-4)
    assert_allclose([float(r["predicted"]) for r in rows], est.predict(X), rtol=1e-4)
    with pytest.raises(ValueError, match="one label per sample"):
        export_routing(est, X[:3], y[:2], tmp_path / "bad.csv")


def test_multi_output_regressor_routes_and_csv(tmp_path):
    X, Y = _piecewise(n_outputs=2)
    est = _fit(HierarchicalEmbeddingMoERegressor(**{**REG, "max_depth": 1}), X, Y)
    records = explain_routes(est, X[:10])
    assert_allclose([r["prediction"] for r in records], est.predict(X[:10]))
    assert all(len(r["leaf_prediction"]) == 2 for r in records)
    assert "predicted [" in format_route(records[0])
    rows = list(csv.DictReader(open(export_routing(est, X[:10], Y[:10],
                                                   tmp_path / "m.csv"))))
    assert list(rows[0])[:2] == ["target_0", "target_1"]
    assert list(rows[0])[-4:] == ["leaf_prediction_0", "leaf_prediction_1",
                                  "predicted_0", "predicted_1"]
    got = [[float(r["predicted_0"]), float(r["predicted_1"])] for r in rows]
    assert_allclose(got, est.predict(X[:10]), rtol=1e-4)


def test_regressor_displays(reg):
    est, X, y = reg
    tree = TreeDisplay.from_estimator(est)
    assert tree.positions_.shape == (est.tree_.node_count, 2)
    # one plain disc per node, no class legend, the leaves' R^2 shown
    wedges = [p for p in tree.ax_.patches if type(p).__name__ == "Wedge"]
    assert len(wedges) == est.tree_.node_count
    assert tree.ax_.get_legend() is None
    assert any(t.get_text().endswith(f"R^2 {est.tree_.nodes[leaf].train_accuracy:.2f}")
               for t in tree.ax_.texts for leaf in est.tree_.leaves)
    # Continuous targets are not labels: a clear error, and binned ones work.
    with pytest.raises(ValueError, match="bin the targets"):
        RoutingDisplay.from_estimator(est, X, y)
    bins = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
    routing = RoutingDisplay.from_estimator(est, X, bins)
    leaves = est.apply(X)
    assert routing.counts.shape == (4, len(np.unique(leaves)))
    assert routing.counts.sum() == len(X)
    assert routing.counts[0, 0] == np.sum((bins == 0) & (leaves == routing.leaves[0]))
    plt.close("all")


@needs_captum
def test_regressor_routing_module_and_attributions(reg):
    est, X, _ = reg
    inner = [n.node_id for n in est.tree_.nodes if not n.is_leaf]
    for node_id in inner:
        node = est.tree_.nodes[node_id]
        with torch.no_grad():
            got = routing_module(est, node_id).eval()(torch.as_tensor(X[:20])).numpy()
        assert_allclose(got, node.router.predict_proba(embed(node.embedder, X[:20])),
                        rtol=1e-4, atol=1e-6)
    a = route_attributions(est, X[:4], node=0)
    assert a.shape == (4, 3) and np.isfinite(a).all() and np.abs(a).sum() > 0
    bars = AttributionDisplay.from_estimator(est, X[:2], feature_names=["a", "b", "c"])
    assert bars.ax_.shape == (2, est.depth_)
    plt.close("all")


def test_flat_regression_mixture_gates(tmp_path):
    X, y = _piecewise()
    moe = MixtureOfExpertsRegressor(n_experts=3, expert_hidden=(8,), gate_hidden=(),
                                    max_epochs=5, lr=0.03, random_state=0).fit(X, y)
    gates = moe.gate_weights(X)
    rows = list(csv.DictReader(open(export_routing(moe, X, y, tmp_path / "moe.csv"))))
    assert list(rows[0])[:4] == ["target", "sample", "leaf", "path"]
    assert "predicted_proba" not in rows[0]
    assert [int(r["leaf"]) for r in rows] == gates.argmax(axis=1).tolist()
    assert_allclose([float(r["predicted"]) for r in rows], moe.predict(X), rtol=1e-4)
    bins = (y > 0).astype(int)
    labels, matrix = moe_label_expert_matrix(moe, X, bins)
    assert_allclose(matrix[1], gates[bins == 1].astype(np.float64).mean(axis=0))
    disp = RoutingDisplay.from_estimator(moe, X, bins)
    assert disp.counts.sum() == len(X)
    plt.close("all")
    with pytest.raises(TypeError, match="tree_"):
        explain_routes(moe, X[:2])


# -- package and CLI -----------------------------------------------------------


def test_public_names():
    """hemoe_sk.inspection is the one public home of the inspection names;
    the estimators carry no inspection methods (they do not import it)."""
    import hemoe_sk.inspection as inspection

    names = {"AttributionDisplay", "RoutingDisplay", "TreeDisplay", "explain_routes",
             "export_gates", "export_routing", "format_route",
             "moe_label_expert_matrix", "plot_expert_heatmap", "route_attributions",
             "routing_module"}
    assert set(inspection.__all__) == names
    assert all(callable(getattr(inspection, name)) for name in names)
    assert not names & set(hemoe_sk.__all__)
    assert not hasattr(HierarchicalEmbeddingMoEClassifier, "explain_routes")
    for method in ("label_expert_matrix", "export_gates", "plot_expert_heatmap"):
        assert not hasattr(MixtureOfExpertsClassifier, method)


@needs_captum
def test_cli_explain(tab_data, tmp_path, capsys):
    X, y = tab_data
    names = [f"f{i}" for i in range(X.shape[1])]
    model = _fit(make_pipeline(StandardScaler(), HierarchicalEmbeddingMoEClassifier(
        **{**TAB, "max_depth": 1})), X, y)
    assert model[-1].n_leaves_ > 1
    hemoe_sk.save(model, tmp_path / "model.hemoe",
                  metadata={"feature_names": names, "target": "animal"})
    data = tmp_path / "data.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "animal"])
        for row, label in zip(X[:50], y[:50]):
            w.writerow([*row, label])
    out, png = tmp_path / "routes.csv", tmp_path / "png"
    assert main(["explain", str(tmp_path / "model.hemoe"), str(data), "--out", str(out),
                 "--png", str(png), "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("sample ") == 2 and "-> leaf" in printed
    rows = list(csv.DictReader(open(out)))
    assert [int(r["leaf"]) for r in rows] == model[-1].apply(
        model[0].transform(X[:50])).tolist()
    assert [r["label"] for r in rows] == y[:50].tolist()
    for name in ("tree.png", "routing.png", "attributions.png"):
        assert (png / name).stat().st_size > 1000
    assert main(["explain", str(data), str(data)]) == 2
    assert "not a hemoe_sk model file" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "model.hemoe"), str(data),
                 "--out", str(out), "--png", str(png), "--node", "99"]) == 2
    assert "node=99 does not exist" in capsys.readouterr().err


def test_cli_explain_regressor(reg, tmp_path, capsys):
    est, X, y = reg
    names = ["a", "b", "c"]
    hemoe_sk.save(est, tmp_path / "reg.hemoe",
                  metadata={"feature_names": names, "target": "value"})
    data = tmp_path / "data.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*names, "value"])
        for row, value in zip(X[:30], y[:30]):
            w.writerow([*row, value])
    out, png = tmp_path / "routes.csv", tmp_path / "png"
    assert main(["explain", str(tmp_path / "reg.hemoe"), str(data), "--out", str(out),
                 "--png", str(png), "--samples", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("predicts") == 2
    assert "no routing.png" in captured.err
    rows = list(csv.DictReader(open(out)))
    assert [int(r["leaf"]) for r in rows] == est.apply(X[:30]).tolist()
    assert_allclose([float(r["predicted"]) for r in rows], est.predict(X[:30]),
                    rtol=1e-4)
    assert (png / "tree.png").stat().st_size > 1000
    assert not (png / "routing.png").exists()


@needs_captum
def test_docstring_examples_run():
    import doctest

    from hemoe_sk.inspection import (
        _attribution_display,
        _attributions,
        _displays,
        _gates,
        _routes,
    )

    attempted = 0
    for module in (_routes, _gates, _attributions, _displays, _attribution_display):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__
        attempted += result.attempted
    assert attempted > 20
    plt.close("all")
