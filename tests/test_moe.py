"""Tests for hemoe_sk.moe: MixtureOfExpertsClassifier and its torch module."""

import csv
import pickle
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import train_test_split

from hemoe_sk.inspection import (
    export_gates,
    moe_label_expert_matrix,
    plot_expert_heatmap,
)
from hemoe_sk.moe import MixtureOfExpertsClassifier
from hemoe_sk.nn.moe import MixtureOfExpertsModule, class_expert_map

GATINGS = ["soft", "topk", "guided"]

# Small, fast configuration (scikit-learn's checks use the same one in
# tests/test_common.py).
TINY = dict(
    n_experts=2,
    expert_hidden=(16,),
    gate_hidden=(),
    max_epochs=15,
    lr=0.03,
    batch_size=64,
    # 0.3's training: the accuracy floors below were set with it.
    optimizer=torch.optim.Adam,
    early_stopping=0.0,
    lr_schedule="constant",
    random_state=0,
)


# -- digits: the accuracy floor every gating scheme must reach ---------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def digits_models(digits):
    Xtr, _, ytr, _ = digits
    return {
        g: MixtureOfExpertsClassifier(gating=g, random_state=0).fit(Xtr, ytr)
        for g in GATINGS
    }


@pytest.mark.slow
@pytest.mark.parametrize("gating", GATINGS)
def test_digits_accuracy_with_defaults(digits, digits_models, gating):
    _, Xte, _, yte = digits
    clf = digits_models[gating]
    assert clf.score(Xte, yte) >= 0.95
    proba = clf.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert clf.expert_usage_.shape == (4,)
    np.testing.assert_allclose(clf.expert_usage_.sum(), 1.0, atol=1e-5)


@pytest.mark.slow
def test_guided_heatmap_is_block_diagonal(digits, digits_models):
    _, Xte, _, yte = digits
    clf = digits_models["guided"]
    labels, matrix = moe_label_expert_matrix(clf, Xte, yte)
    assert matrix.shape == (10, 4)
    assigned = class_expert_map(10, 4).argmax(axis=1)
    agreement = np.mean(matrix.argmax(axis=1) == assigned)
    assert agreement >= 0.8
    # The assigned expert carries most of the gate mass, on average.
    assert matrix[np.arange(10), assigned].mean() > 0.5
    assert [list(c) for c in clf.expert_classes_] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7],
        [8, 9],
    ]


@pytest.mark.slow
def test_topk_gates_are_sparse_on_digits(digits, digits_models):
    _, Xte, _, _ = digits
    gates = digits_models["topk"].gate_weights(Xte)
    assert gates.shape == (len(Xte), 4)
    assert np.all((gates > 0).sum(axis=1) == 2)
    # A float32 softmax sums to 1 within a few ulps (1.2e-7 measured).
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_export_gates_and_heatmap(digits, digits_models, tmp_path):
    _, Xte, _, yte = digits
    clf = digits_models["guided"]
    path = export_gates(clf, Xte[:20], yte[:20], tmp_path / "gates.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "label",
        "predicted",
        "expert_0",
        "expert_1",
        "expert_2",
        "expert_3",
    ]
    assert len(rows) == 21
    assert [int(r[0]) for r in rows[1:]] == list(yte[:20])
    gates = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    np.testing.assert_allclose(gates, clf.gate_weights(Xte[:20]), atol=1e-5)

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_expert_heatmap(clf, Xte, yte)
    assert ax.images[0].get_array().shape == (10, 4)
    plt.close(ax.figure)


def test_heatmap_without_matplotlib_says_so(monkeypatch):
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    clf = MixtureOfExpertsClassifier(**{**TINY, "max_epochs": 2}).fit(X, y)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="needs matplotlib"):
        plot_expert_heatmap(clf, X, y)


def test_gate_functions_on_a_guided_mixture(tmp_path):
    X, y = make_classification(n_samples=60, n_features=4, n_classes=3,
                               n_informative=3, n_redundant=0, random_state=0)
    clf = MixtureOfExpertsClassifier(**{**TINY, "gating": "guided", "n_experts": 3,
                                        "max_epochs": 2}).fit(X, y)
    labels, matrix = moe_label_expert_matrix(clf, X, y)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    gates = clf.gate_weights(X)
    for i, label in enumerate(labels):
        np.testing.assert_allclose(matrix[i], gates[y == label].astype(np.float64).mean(axis=0))
    # Rows are mean gate vectors: they sum to one.
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-5)
    with open(export_gates(clf, X, y, tmp_path / "g.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert [r[1] for r in rows[1:]] == [str(v) for v in clf.predict(X)]
    with pytest.raises(ValueError, match="one label per sample"):
        moe_label_expert_matrix(clf, X, y[:-1])
    with pytest.raises(TypeError, match="MixtureOfExpertsClassifier"):
        moe_label_expert_matrix(object(), X, y)

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_expert_heatmap(clf, X, y)
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix)
    assert len(ax.patches) == 3  # guided: one outline per label
    plt.close("all")


# -- top-k: only the selected experts run ------------------------------------


def _count_rows(module):
    counts = [0] * len(module.experts)
    calls = [0] * len(module.experts)

    def hook(i):
        def fn(mod, inputs, output):
            counts[i] += inputs[0].shape[0]
            calls[i] += 1

        return fn

    handles = [e.register_forward_hook(hook(i)) for i, e in enumerate(module.experts)]
    return counts, calls, handles


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_topk_runs_only_selected_experts(k, training):
    torch.manual_seed(0)
    n, n_experts = 50, 6
    module = MixtureOfExpertsModule(
        5,
        3,
        n_experts=n_experts,
        expert_hidden=(8,),
        gate_hidden=(),
        gating="topk",
        k=k,
    )
    # Spread the gate (zero-initialised) so that the routing is not trivial.
    torch.nn.init.normal_(module.gate_logits.weight, std=2.0)
    module.train(training)
    x = torch.randn(n, 5)
    counts, calls, handles = _count_rows(module)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(1)
            out = module(x)
            torch.manual_seed(1)
            gates = module.gate_weights(x)
    finally:
        for h in handles:
            h.remove()
    selected = (gates > 0).sum(dim=0).tolist()
    assert sum(counts) == k * n  # k rows per sample, not n_experts
    assert counts == selected
    assert calls == [1 if c else 0 for c in counts]  # unselected experts never run
    assert sum(1 for c in counts if c) >= 2

    # The dispatched result equals the dense computation with the same gates.
    with torch.no_grad():
        log_p = torch.stack(
            [torch.log_softmax(e(x), -1) for e in module.experts], dim=1
        )
        dense = torch.logsumexp(gates.log().unsqueeze(-1) + log_p, dim=1)
    torch.testing.assert_close(out.detach(), dense, atol=1e-5, rtol=1e-5)


def test_topk_noise_only_in_training():
    torch.manual_seed(0)
    module = MixtureOfExpertsModule(4, 3, n_experts=4, gating="topk", k=2)
    x = torch.randn(30, 4)
    module.eval()
    torch.testing.assert_close(module(x), module(x))
    module.train()
    assert not torch.allclose(module.gate_weights(x), module.gate_weights(x))
    module(x)
    balance = module.auxiliary_loss(torch.zeros(30, dtype=torch.long))
    assert balance.ndim == 0 and balance.item() >= 0 and balance.requires_grad


def test_soft_losses_are_the_documented_ones():
    torch.manual_seed(0)
    x = torch.randn(7, 4)
    for loss in ("mixture_nll", "weighted_output"):
        module = MixtureOfExpertsModule(
            4, 3, n_experts=3, gating="soft", loss=loss
        ).eval()
        g = module.gate_weights(x)
        z = torch.stack([e(x) for e in module.experts], dim=1)
        out = module(x)
        if loss == "mixture_nll":
            expected = torch.log((g.unsqueeze(-1) * torch.softmax(z, -1)).sum(1))
            torch.testing.assert_close(out.exp().sum(1), torch.ones(7))
        else:
            expected = (g.unsqueeze(-1) * z).sum(1)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_guided_auxiliary_loss_uses_labels():
    torch.manual_seed(0)
    module = MixtureOfExpertsModule(
        4, 4, n_experts=2, gating="guided", diversity_weight=0.0, l2_weight=0.0
    )
    np.testing.assert_array_equal(
        module.class_expert_map.numpy(), [[1, 0], [1, 0], [0, 1], [0, 1]]
    )
    x = torch.randn(16, 4)
    module(x)
    g = module.gate_weights(x).detach()
    y = torch.tensor([0, 3] * 8)
    target = module.class_expert_map[y]
    expected = torch.nn.functional.binary_cross_entropy(g, target)
    torch.testing.assert_close(
        module.auxiliary_loss(y).detach(), expected, atol=1e-5, rtol=1e-5
    )
    # A different labelling changes the loss but never the forward pass.
    assert not torch.isclose(module.auxiliary_loss(3 - y), expected)


def test_class_expert_map_more_experts_than_classes():
    m = class_expert_map(2, 5)
    np.testing.assert_array_equal(m.sum(axis=0), 1)  # one class per expert
    np.testing.assert_array_equal(m.sum(axis=1), [3, 2])


# -- API behaviour -------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    X, y = make_classification(
        n_samples=120, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    return X, y


@pytest.mark.parametrize("gating", GATINGS)
def test_string_labels_round_trip(small, gating):
    X, y = small
    names = np.array(["zebra", "ant", "moose"])[y]
    clf = MixtureOfExpertsClassifier(gating=gating, **TINY).fit(X, names)
    assert list(clf.classes_) == ["ant", "moose", "zebra"]
    assert set(clf.predict(X)) <= set(names)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    # Columns follow classes_: the argmax column names the predicted label.
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.score(X, names) > 0.7
    assert clf.n_features_in_ == 6


@pytest.mark.parametrize("gating", GATINGS)
def test_pickle_round_trip_identical_predictions(small, gating, tmp_path):
    X, y = small
    clf = MixtureOfExpertsClassifier(gating=gating, **TINY)
    pickle.loads(pickle.dumps(clf))  # unfitted too
    clf.fit(X, y)
    proba = clf.predict_proba(X)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), proba)
    joblib.dump(clf, tmp_path / "moe.joblib")
    restored = joblib.load(tmp_path / "moe.joblib")
    np.testing.assert_array_equal(restored.predict_proba(X), proba)
    np.testing.assert_array_equal(restored.gate_weights(X), clf.gate_weights(X))


def test_random_state_reproducible_and_global_rng_untouched(small):
    X, y = small
    np.random.seed(123)
    torch.manual_seed(123)
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    a = MixtureOfExpertsClassifier(gating="topk", **TINY).fit(X, y)
    b = MixtureOfExpertsClassifier(gating="topk", **TINY).fit(X, y)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = MixtureOfExpertsClassifier(gating="topk", **{**TINY, "random_state": 1}).fit(
        X, y
    )
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))


def test_clear_errors(small):
    X, y = small
    clf = MixtureOfExpertsClassifier(**{**TINY, "max_epochs": 2})
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(X_nan, y)
    X_inf = X.copy()
    X_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        clf.fit(X_inf, y)
    with pytest.raises(ValueError, match="1 class"):
        clf.fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="k=3 must not exceed n_experts=2"):
        MixtureOfExpertsClassifier(gating="topk", k=3, **TINY).fit(X, y)
    with pytest.raises(ValueError, match="expert_hidden"):
        MixtureOfExpertsClassifier(expert_hidden=(8, 0)).fit(X, y)
    with pytest.raises(ValueError, match="gating"):
        MixtureOfExpertsClassifier(gating="hard").fit(X, y)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict_proba(X_nan)
