"""ConvEmbedder: the embedder for pixel data (conv-BN-ReLU blocks)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.nn import ConvEmbedder


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "shape, n_pixels_in_dense",
    [((1, 28, 28), 64 * 3 * 3), ((1, 8, 8), 64 * 2 * 2), ((3, 5, 7), 64 * 2 * 3)],
)
def test_shapes_and_pooling(shape, n_pixels_in_dense):
    n_features = int(np.prod(shape))
    net = ConvEmbedder(n_features, 10, image_shape=shape).eval()
    x = torch.rand(6, n_features)
    assert net(x).shape == (6, 10)
    assert net.embed(x).shape == (6, 64)
    dense = [m for m in net.dense if isinstance(m, nn.Linear)][0]
    # 2x2 pools only while the map is at least 4 pixels wide: never below 2x2.
    assert dense.in_features == n_pixels_in_dense


def test_defaults_are_a_small_batch_norm_cnn():
    net = ConvEmbedder(784, 10, image_shape=(1, 28, 28))
    assert 50_000 < _n_params(net) < 100_000
    kinds = [type(m) for m in net.features]
    assert kinds.count(nn.Conv2d) == kinds.count(nn.BatchNorm2d) == 3
    # A convolution followed by batch norm carries no bias of its own.
    assert all(m.bias is None for m in net.features if isinstance(m, nn.Conv2d))
    plain = ConvEmbedder(64, 10, channels=(16, 32), batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))


def test_bad_channels_are_a_clear_error():
    with pytest.raises(ValueError, match="channels"):
        ConvEmbedder(64, 10, channels=())
    with pytest.raises(ValueError, match="image_shape"):
        ConvEmbedder(63, 10)


def test_batch_norm_uses_running_statistics_in_eval_mode():
    torch.manual_seed(0)
    net = ConvEmbedder(64, 3, channels=(4, 8), embedding_dim=8)
    x = torch.rand(32, 64) * 3 + 1
    net.train()
    net(x)  # one training pass moves the running statistics
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    net.eval()
    with torch.no_grad():
        before = bn.running_mean.clone()
        whole = net(x)
        rows = torch.cat([net(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(bn.running_mean, before)
    torch.testing.assert_close(whole, rows, rtol=1e-5, atol=1e-5)


def test_classifier_batch_predict_equals_one_by_one():
    X, y = load_digits(return_X_y=True)
    X = (X[:300] / 16.0).astype(np.float32)
    y = y[:300]
    clf = HierarchicalEmbeddingMoEClassifier(
        ConvEmbedder,
        max_depth=0,
        max_epochs=3,
        batch_size=32,
        random_state=0,
        embedder__image_shape=(1, 8, 8),
        embedder__channels=(8, 16),
    ).fit(X, y)
    proba = clf.predict_proba(X[:40])
    one_by_one = np.vstack([clf.predict_proba(X[i : i + 1]) for i in range(40)])
    np.testing.assert_allclose(proba, one_by_one, rtol=1e-5, atol=1e-6)
    assert np.mean(clf.predict(X) == y) > 0.5
