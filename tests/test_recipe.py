"""The default network recipe: TabularEmbedder, robust scaling, PLR
embeddings, early stopping, the learning-rate schedule and the batch-size
rule (hemoe_sk.nn.recipe, hemoe_sk.nn.build)."""

import math

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from hemoe_sk import (
    HierarchicalEmbeddingMoEClassifier,
    HierarchicalEmbeddingMoERegressor,
)
from hemoe_sk.nn import PeriodicEmbedding, RobustScaling, TabularEmbedder
from hemoe_sk.nn.build import make_classifier_net
from hemoe_sk.nn.recipe import (
    auto_batch_size,
    auto_hidden_dims,
    binary_columns,
    warmup_cosine,
)
from hemoe_sk.nn.training import train_net


def _table(n=400, seed=0):
    """Two numerical columns on very different scales, one binary column and
    one constant column; the label depends on both numerical columns."""
    rng = np.random.RandomState(seed)
    X = np.column_stack([
        rng.randn(n) * 1000 + 5000,
        rng.exponential(0.01, n),
        rng.randint(0, 2, n),
        np.full(n, 3.0),
    ]).astype(np.float32)
    y = ((X[:, 0] > 5000) ^ (X[:, 1] > 0.007) ^ (X[:, 2] > 0)).astype(np.int64)
    return X, y


class _Record(Callback):
    """Records the optimizer's learning rate at every batch and a copy of the
    module's weights at the end of every epoch (callbacks run after the net's
    own hooks, so this sees what the net saw)."""

    def on_train_begin(self, net, **kwargs):
        self.lrs, self.states = [], []

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.lrs.append(net.optimizer_.param_groups[0]["lr"])

    def on_epoch_end(self, net, **kwargs):
        self.states.append(
            {k: v.clone() for k, v in net.module_.state_dict().items()}
        )


def test_periodic_embedding_shapes_and_gradients():
    emb = PeriodicEmbedding(5, d_embedding=6, n_frequencies=3)
    x = torch.randn(7, 5, requires_grad=True)
    out = emb(x)
    assert out.shape == (7, 30)
    assert (out >= 0).all()  # ReLU
    out.sum().backward()
    assert emb.frequencies.grad is not None and emb.frequencies.grad.abs().sum() > 0


def test_tabular_embedder_embeds_only_numerical_features():
    net = TabularEmbedder(6, 3, hidden_dims=(16, 8), numerical_features=(0, 2),
                          d_embedding=4)
    assert net.plr is not None
    # 2 numerical columns * 4 + 4 other columns go into the first layer
    assert net.body[0].in_features == 2 * 4 + 4
    x = torch.randn(5, 6)
    assert net(x).shape == (5, 3) and net.embed(x).shape == (5, 8)
    # wide rows (flat pixels) skip PLR under "auto"; "plr" forces it
    assert TabularEmbedder(200, 2, hidden_dims=(8,)).plr is None
    forced = TabularEmbedder(200, 2, hidden_dims=(8,), numerical_embedding="plr",
                             d_embedding=2)
    assert forced.body[0].in_features == 400
    with pytest.raises(ValueError, match="numerical_features"):
        TabularEmbedder(3, 2, numerical_features=(5,))
    with pytest.raises(ValueError, match="numerical_embedding"):
        TabularEmbedder(3, 2, numerical_embedding="pl")


def test_data_defaults_size_the_network_and_find_binary_columns():
    X, _ = _table()
    defaults = TabularEmbedder.data_defaults(X)
    assert defaults["numerical_features"] == (0, 1)  # binary and constant left out
    assert defaults["hidden_dims"] == auto_hidden_dims(len(X))
    assert binary_columns(X).tolist() == [False, False, True, True]
    assert auto_hidden_dims(100) == (64, 64)
    assert auto_hidden_dims(70_000) == (256, 256, 256)
    assert len(auto_hidden_dims(19_999)) == 2


def test_batch_size_rule_grows_with_the_data_and_is_used():
    sizes = [auto_batch_size(n) for n in (10, 1_000, 10_000, 100_000, 10**8)]
    assert sizes == sorted(sizes) and sizes[0] == 32 and sizes[-1] == 1024
    assert auto_batch_size(4_096) == 64
    X, y = _table(n=1_000)
    net = make_classifier_net(TabularEmbedder, n_features=4, n_classes=2,
                              batch_size="auto", max_epochs=2)
    train_net(net, X, y, seed=0, stage="test")
    batches = net.history[-1, "train_batch_count"]
    assert batches == math.ceil(1_000 / auto_batch_size(1_000))


def test_robust_scaling_is_fitted_on_the_training_rows_and_ignores_feature_scale():
    X, y = _table()
    clf = HierarchicalEmbeddingMoEClassifier(max_depth=0, max_epochs=5, random_state=0)
    clf.fit(X, y)
    scaling = clf.embedder_.module_.scaling
    median = np.quantile(X[:, 0], 0.5, method="inverted_cdf")
    np.testing.assert_allclose(scaling.center[0].item(), median, rtol=1e-6)
    q25, q75 = np.quantile(X[:, 1], [0.25, 0.75], method="inverted_cdf")
    np.testing.assert_allclose(scaling.scale[1].item(), q75 - q25, rtol=1e-4)
    assert scaling.clip.tolist() == [True, True, False, False]
    before = scaling.center.clone()
    clf.predict(X * 2)  # predicting does not refit the scaling
    assert torch.equal(before, clf.embedder_.module_.scaling.center)
    # An affine change of every feature's unit changes nothing (up to float32).
    a = np.array([0.001, 1000.0, 7.0, 2.0], dtype=np.float32)
    b = np.array([-3.0, 5.0, 1.0, -1.0], dtype=np.float32)
    other = HierarchicalEmbeddingMoEClassifier(
        max_depth=0, max_epochs=5, random_state=0
    ).fit(X * a + b, y)
    np.testing.assert_allclose(
        other.predict_proba(X * a + b), clf.predict_proba(X), atol=2e-3
    )


def test_robust_scaling_weights_equal_repeated_rows():
    rng = np.random.RandomState(1)
    X = rng.randn(50, 3)
    w = rng.randint(1, 4, size=50)
    a, b = RobustScaling(3).fit(X, w.astype(float)), RobustScaling(3).fit(np.repeat(X, w, 0))
    assert torch.equal(a.center, b.center) and torch.equal(a.scale, b.scale)


def test_robust_scaling_smooth_clipping_bounds_outliers():
    scaling = RobustScaling(1).fit(np.arange(100.0)[:, None])
    z = scaling(torch.tensor([[1e9], [49.0]], dtype=torch.float32))  # median 49
    assert z[0, 0] <= 3.0 and abs(z[1, 0]) < 1e-6


def test_schedule_warms_up_then_decays():
    assert warmup_cosine(0.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0)
    X, y = _table()
    record = _Record()
    net = make_classifier_net(
        TabularEmbedder, n_features=4, n_classes=2, lr=0.01, max_epochs=10,
        batch_size=50, lr_schedule="warmup_cosine",
    )
    net.callbacks = [*net.callbacks, ("record", record)]
    train_net(net, X, y, seed=0, stage="test")
    lrs = np.array(record.lrs)
    peak = int(np.argmax(lrs))
    assert lrs.max() == pytest.approx(0.01, rel=0.05)
    assert 0 < peak < len(lrs) // 4
    assert (np.diff(lrs[:peak + 1]) >= 0).all() and (np.diff(lrs[peak:]) <= 1e-12).all()
    assert lrs[-1] < 0.001


def test_early_stopping_restores_the_best_epoch():
    X, y = _table(n=600)
    # labels half noise: the held-out loss turns up early
    y = np.where(np.random.RandomState(0).rand(len(y)) < 0.5, 1 - y, y)
    record = _Record()
    net = make_classifier_net(
        TabularEmbedder, n_features=4, n_classes=2, lr=0.02, max_epochs=60,
        batch_size=32, validation_fraction=0.2, patience=3,
        module_params={"hidden_dims": (64, 64)},
    )
    net.callbacks = [*net.callbacks, ("record", record)]
    train_net(net, X, y, seed=0, stage="test")
    run = len(net.history)
    assert run < 60, "training should have stopped early"
    assert net.best_epoch_ == run - 3  # patience epochs after the best one
    # the weights of the best epoch are back, not those of the last one
    best = record.states[net.best_epoch_ - 1]
    last = record.states[-1]
    assert any(not torch.equal(best[k], last[k]) for k in best)
    for key, value in net.module_.state_dict().items():
        assert torch.equal(value, best[key]), key


def test_early_stopping_is_skipped_for_tiny_fits():
    X, y = _table(n=40)
    net = make_classifier_net(TabularEmbedder, n_features=4, n_classes=2,
                              max_epochs=3, validation_fraction=0.1, patience=1)
    train_net(net, X, y, seed=0, stage="test")
    assert len(net.history) == 3 and "valid_loss" not in net.history[-1]


def test_the_default_estimators_are_reproducible_for_one_random_state():
    X, y = _table()
    a = HierarchicalEmbeddingMoEClassifier(max_depth=0, max_epochs=8, random_state=3)
    b = HierarchicalEmbeddingMoEClassifier(max_depth=0, max_epochs=8, random_state=3)
    np.testing.assert_array_equal(a.fit(X, y).predict_proba(X), b.fit(X, y).predict_proba(X))
    r1 = HierarchicalEmbeddingMoERegressor(max_depth=0, max_epochs=8, random_state=3)
    r2 = HierarchicalEmbeddingMoERegressor(max_depth=0, max_epochs=8, random_state=3)
    np.testing.assert_array_equal(r1.fit(X, X[:, 1]).predict(X), r2.fit(X, X[:, 1]).predict(X))


def test_default_base_learns_a_nonlinear_table():
    X, y = _table(n=2_000)
    clf = HierarchicalEmbeddingMoEClassifier(max_depth=0, random_state=0)
    clf.fit(X[:1_500], y[:1_500])
    assert clf.score(X[1_500:], y[1_500:]) > 0.9
    assert clf.embedder_.best_epoch_ is not None  # early stopping was on
