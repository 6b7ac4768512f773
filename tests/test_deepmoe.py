"""Tests for hemoe_sk.nn.deepmoe: the DeepMoE embedder module."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hemoe_sk.nn.build import make_classifier_net
from hemoe_sk.nn.deepmoe import DeepMoEEmbedder, gate_sparsity
from hemoe_sk.nn.inference import embed, predict_proba
from hemoe_sk.nn.training import train_net


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(
        X, y.astype(np.int64), test_size=0.3, stratify=y, random_state=0
    )


@pytest.fixture(scope="module")
def digits_net(digits):
    Xtr, _, ytr, _ = digits
    net = make_classifier_net(
        DeepMoEEmbedder, n_features=64, n_classes=10, max_epochs=20, lr=3e-3
    )
    return train_net(net, Xtr, ytr, seed=0, stage="DeepMoE on digits")


@pytest.mark.slow
def test_digits_accuracy_and_sparsity(digits, digits_net):
    _, Xte, _, yte = digits
    accuracy = np.mean(predict_proba(digits_net, Xte).argmax(axis=1) == yte)
    assert accuracy >= 0.95
    overall, per_layer = gate_sparsity(digits_net, Xte, per_layer=True)
    # The L1 penalty closes a real share of the channels, but not all.
    assert 0.1 < overall < 0.9
    assert per_layer.shape == (2,)
    assert np.all((per_layer > 0) & (per_layer < 1))
    # Gates differ between samples: the routing is per example.
    gates = torch.cat(
        digits_net.module_.eval().gates(torch.from_numpy(Xte[:50])), dim=1
    )
    assert (gates > 0).float().std(dim=0).max() > 0


@pytest.mark.slow
def test_embed_contract_on_trained_net(digits, digits_net):
    _, Xte, _, _ = digits
    z = embed(digits_net, Xte[:30])
    assert z.shape == (30, 64)
    module = digits_net.module_.eval()
    with torch.no_grad():
        logits = module.output(torch.from_numpy(z))
        torch.testing.assert_close(logits, module(torch.from_numpy(Xte[:30])))


def _module(**kwargs):
    torch.manual_seed(0)
    return DeepMoEEmbedder(64, 10, **kwargs)


def test_forward_embed_shapes():
    module = _module(hidden_dim=24)
    x = torch.rand(5, 64)
    assert module(x).shape == (5, 10)
    assert module.embed(x).shape == (5, 24)
    gates = module.gates(x)
    assert [g.shape for g in gates] == [(5, 32), (5, 64)]
    assert all((g >= 0).all() for g in gates)


def test_image_shape_must_match():
    with pytest.raises(ValueError, match="image_shape"):
        DeepMoEEmbedder(60, 3, image_shape=(1, 8, 8))
    # Non-square, multi-channel images work.
    module = DeepMoEEmbedder(3 * 6 * 4, 3, image_shape=(3, 6, 4), channels=(4, 8, 8))
    assert module(torch.rand(2, 72)).shape == (2, 3)


def test_gates_scale_output_channels():
    module = _module().eval()
    x = torch.rand(4, 64)
    with torch.no_grad():
        # Close channel 3 of the first convolution for every sample.
        module.gate_heads[0].weight[3].zero_()
        module.gate_heads[0].bias[3] = -1.0
    seen = []
    handle = module.convs[1].register_forward_hook(
        lambda m, inp, out: seen.append(inp[0])
    )
    try:
        module(x)
    finally:
        handle.remove()
    assert torch.all(seen[0][:, 3] == 0)
    assert torch.any(seen[0][:, 2] != 0)


def test_all_gates_closed_means_full_sparsity():
    module = _module().eval()
    with torch.no_grad():
        for head in module.gate_heads:
            head.weight.zero_()
            head.bias.fill_(-1.0)
    x = torch.rand(6, 64)
    out = module(x)
    assert module.last_gate_sparsity_ == 1.0
    assert gate_sparsity(module, x.numpy()) == 1.0
    # Nothing of the input gets through the base network.
    torch.testing.assert_close(out, module(torch.rand(6, 64)))


def test_gate_sparsity_helper_matches_manual_count():
    module = _module(gate_bias=0.0)
    X = np.random.default_rng(0).random((37, 64)).astype(np.float32)
    overall, per_layer = gate_sparsity(module, X, batch_size=10, per_layer=True)
    with torch.no_grad():
        gates = module.eval().gates(torch.from_numpy(X))
    # Counts over sizes in float64, as gate_sparsity divides: exact (a float32
    # mean of the 0/1 mask rounds differently, by 1e-8).
    expected_layers = [int((g == 0).sum()) / g.numel() for g in gates]
    np.testing.assert_array_equal(per_layer, expected_layers)
    total = sum(g.numel() for g in gates)
    assert overall == pytest.approx(sum(int((g == 0).sum()) for g in gates) / total)
    assert 0 < overall < 1  # zero bias: roughly half the gates closed
    module(torch.from_numpy(X))
    assert module.last_gate_sparsity_ == pytest.approx(overall)


def test_auxiliary_loss_is_l1_plus_embedding_ce():
    module = _module(lam=0.5, mu=2.0)
    x = torch.rand(8, 64)
    y = torch.arange(8) % 10
    module(x)
    gates = module.gates(x)
    l1 = sum(g.abs().sum() for g in gates) / 8  # sum over all gates, batch mean
    ce = torch.nn.functional.cross_entropy(
        module.embedding_head(module.shallow_embedding(x)), y
    )
    torch.testing.assert_close(module.auxiliary_loss(y), 0.5 * l1 + 2.0 * ce)


def test_auxiliary_loss_needs_forward():
    with pytest.raises(RuntimeError, match="forward"):
        _module().auxiliary_loss(torch.zeros(2, dtype=torch.long))


def test_pickle_and_deepcopy_after_training_forward():
    module = _module()
    x = torch.rand(4, 64)
    module.train()
    module(x).sum().backward()  # leaves graph tensors in the cache
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        clone.eval()
        module.eval()
        torch.testing.assert_close(clone(x), module(x))


def test_training_objective_includes_gate_penalty(digits):
    Xtr, _, ytr, _ = digits
    X, y = Xtr[:300], ytr[:300]
    sparsity = {}
    for lam in (0.0, 1e-2):
        net = make_classifier_net(
            DeepMoEEmbedder,
            n_features=64,
            n_classes=10,
            module_params=dict(channels=(8, 16), lam=lam),
            max_epochs=15,
            lr=3e-3,
        )
        train_net(net, X, y, seed=0, stage="DeepMoE penalty")
        sparsity[lam] = gate_sparsity(net, X)
    # HemoeNeuralNetClassifier adds auxiliary_loss: the L1 term closes gates
    # (a much larger lam closes all of them for good, see the docs).
    assert sparsity[0.0] < 0.05
    assert 0.1 < sparsity[1e-2] < 1.0
