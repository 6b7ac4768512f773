"""Tests for hemoe_sk.nn.experts: residual, LoRA and KL-anchored experts."""

import copy
import doctest
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import hemoe_sk.nn.experts as experts_module
from hemoe_sk.nn import (
    ConvEmbedder,
    DeepMoEEmbedder,
    MLPEmbedder,
    embed,
    predict_proba,
    train_net,
)
from hemoe_sk.nn.build import make_classifier_net
from hemoe_sk.nn.experts import (
    ExpertNeuralNetClassifier,
    KLToParentModule,
    LoRAConv2d,
    LoRALinear,
    ResidualExpertModule,
    expert_parameter_bytes,
    expert_parameters,
    lora_expert,
    make_expert_net,
)

MODULES = {
    "mlp": (MLPEmbedder, {"hidden_dims": (32, 16)}),
    "conv": (ConvEmbedder, {"channels": (4, 8), "embedding_dim": 16}),
    "deepmoe": (
        DeepMoEEmbedder, {"channels": (4, 8), "embedding_dim": 8, "hidden_dim": 16}
    ),
}
KINDS = ["finetune", "residual", "lora"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return X[:600], y[:600].astype(np.int64)


def _parent(digits, name, epochs=3, **extra):
    X, y = digits
    module, params = MODULES[name]
    net = make_classifier_net(
        module, n_features=64, n_classes=10, module_params={**params, **extra},
        max_epochs=epochs,
    )
    return train_net(net, X, y, seed=0, stage=f"{name} parent")


@pytest.fixture(scope="module")
def parents(digits):
    return {name: _parent(digits, name) for name in MODULES}


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(module, saved):
    now = module.state_dict()
    assert now.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(now[key], value), key


def _mean_kl(P, Q):
    return float(np.mean(np.sum(P * (np.log(P + 1e-12) - np.log(Q + 1e-12)), axis=1)))


# -- equal to the parent before training ---------------------------------------


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("build", ["residual", "lora", "lora-noconv"])
def test_module_equals_parent_before_training(parents, digits, name, build):
    parent = parents[name].module_.eval()
    if build == "residual":
        expert = ResidualExpertModule(parent)
    else:
        expert = lora_expert(parent, rank=3, conv=build == "lora", random_state=0)
    expert.eval()
    x = torch.from_numpy(digits[0][:50])
    with torch.no_grad():
        assert torch.equal(expert(x), parent(x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kl_weight", [0.0, 1.0])
def test_expert_net_equals_parent_before_training(parents, digits, kind, kl_weight):
    parent = parents["mlp"]
    expert = make_expert_net(parent, kind, kl_weight=kl_weight, random_state=0)
    X = digits[0]
    np.testing.assert_array_equal(predict_proba(expert, X), predict_proba(parent, X))
    if kind != "finetune" or kl_weight > 0:
        assert isinstance(expert, ExpertNeuralNetClassifier)
        assert expert.parent_net_ is parent
    assert isinstance(expert.module_, KLToParentModule) == (kl_weight > 0)


# -- training changes the expert, never the parent -------------------------------


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("kind", KINDS)
def test_training_changes_expert_not_parent(parents, digits, name, kind):
    X, y = digits
    parent = parents[name]
    saved = _state(parent.module_)
    flags = [p.requires_grad for p in parent.module_.parameters()]
    before = predict_proba(parent, X)
    expert = make_expert_net(parent, kind, kl_weight=0.5, random_state=0)
    rows = np.flatnonzero(y < 3)
    train_net(expert, X[rows], y[rows], seed=1, stage="expert", partial=True,
              max_epochs=2)

    _assert_same_state(parent.module_, saved)
    assert [p.requires_grad for p in parent.module_.parameters()] == flags
    np.testing.assert_array_equal(predict_proba(parent, X), before)
    assert np.abs(predict_proba(expert, X) - before).max() > 1e-3

    # The optimizer holds exactly the expert's own trainable parameters.
    in_optimizer = {id(p) for g in expert.optimizer_.param_groups for p in g["params"]}
    own = {id(p) for _, p in expert_parameters(expert.module_) if p.requires_grad}
    assert in_optimizer == own
    assert not in_optimizer & {id(p) for p in parent.module_.parameters()}


def test_parent_stays_trainable_after_lora_expert(parents, digits):
    """Building an expert does not freeze the parent for its other users."""
    X, y = digits
    parent = copy.deepcopy(parents["mlp"])
    make_expert_net(parent, "lora", random_state=0)
    make_expert_net(parent, "residual")
    finetuned = make_expert_net(parent, "finetune")
    saved = _state(finetuned.module_)
    train_net(finetuned, X, y, seed=2, stage="finetune", partial=True, max_epochs=1)
    changed = [
        not torch.equal(v, finetuned.module_.state_dict()[k]) for k, v in saved.items()
    ]
    assert all(changed)


def test_residual_parent_stays_in_eval_mode(parents):
    expert = ResidualExpertModule(parents["mlp"].module_)
    expert.train()
    assert expert.training and expert.correction.training
    assert not any(m.training for m in expert.parent.modules())


# -- LoRA structure and memory ------------------------------------------------------


def test_lora_shares_parent_layers_and_owns_its_head(parents):
    parent = parents["mlp"].module_
    expert = lora_expert(parent, rank=4, random_state=0)
    assert type(expert) is MLPEmbedder
    linears = [m for m in expert.body if isinstance(m, LoRALinear)]
    assert [m.base for m in linears] == [parent.body[0], parent.body[3]]
    assert expert.body[0].base.weight is parent.body[0].weight
    assert expert.body[0].lora_A.weight.shape == (4, 64)
    assert expert.body[0].lora_B.weight.shape == (32, 4)
    assert torch.count_nonzero(expert.body[0].lora_B.weight) == 0
    assert isinstance(expert.output, nn.Linear) and expert.output is not parent.output
    assert torch.equal(expert.output.weight, parent.output.weight)
    # The expert's own parameters: the adapters and the head.
    names = [n for n, _ in expert_parameters(expert)]
    assert names == [
        "body.0.lora_A.weight", "body.0.lora_B.weight",
        "body.3.lora_A.weight", "body.3.lora_B.weight",
        "output.weight", "output.bias",
    ]


def test_lora_conv_adapters(parents, digits):
    parent = parents["conv"].module_
    expert = lora_expert(parent, rank=2, random_state=0)
    convs = [m for m in expert.features if isinstance(m, LoRAConv2d)]
    # conv, batch norm, ReLU, pool per block.
    assert [c.base for c in convs] == [parent.features[0], parent.features[4]]
    assert convs[1].lora_A.kernel_size == (3, 3) and convs[1].lora_A.out_channels == 2
    assert convs[1].lora_B.kernel_size == (1, 1) and convs[1].lora_B.out_channels == 8
    assert isinstance(expert.dense[1], LoRALinear)
    assert not any(isinstance(m, nn.Conv2d) and not isinstance(m, LoRAConv2d)
                   for m in expert.features.children())

    frozen_convs = lora_expert(parent, rank=2, conv=False)
    assert all(c.rank == 0 for c in frozen_convs.modules() if isinstance(c, LoRAConv2d))
    assert expert_parameter_bytes(frozen_convs) < expert_parameter_bytes(expert)

    # Training moves the conv adapters (gradients reach them), not the base.
    net = make_expert_net(parents["conv"], "lora", rank=2, random_state=0)
    X, y = digits
    train_net(net, X[y < 3], y[y < 3], seed=1, stage="conv lora", partial=True,
              max_epochs=2)
    assert torch.count_nonzero(net.module_.features[0].lora_B.weight) > 0
    assert net.module_.features[0].base is parents["conv"].module_.features[0]


def _lora_bytes(layers, rank, head):
    """Float32 bytes of rank-r adapters on ``layers`` (in, out) plus a head."""
    return 4 * (sum(rank * (a + b) for a, b in layers) + head[0] * head[1] + head[1])


def test_lora_bytes_per_leaf():
    mlp = MLPEmbedder(784, 10, hidden_dims=(128, 64))
    full = expert_parameter_bytes(mlp)
    assert full == 4 * sum(p.numel() for p in mlp.parameters()) == 437544
    lora = expert_parameter_bytes(lora_expert(mlp, rank=4))
    assert lora == _lora_bytes([(784, 128), (128, 64)], 4, (64, 10)) == 20264
    assert lora / full < 0.10
    # A residual expert owns a whole correction network: a full copy.
    assert expert_parameter_bytes(ResidualExpertModule(mlp)) == full

    conv = ConvEmbedder(64, 10, image_shape=(1, 8, 8), channels=(16, 32))
    full = expert_parameter_bytes(conv)
    # convs without bias (batch norm follows), BN 2 x channels, dense 32*2*2 -> 64.
    assert full == 4 * (9 * 16 + 32 + 16 * 32 * 9 + 64 + 128 * 64 + 64 + 650) == 55016
    lora = expert_parameter_bytes(lora_expert(conv, rank=4))
    # conv A: in * r * 3 * 3, conv B: r * out (1x1); batch norms copied and
    # trained; dense 128 -> 64; head 64 -> 10.
    expected = 4 * (
        1 * 4 * 9 + 4 * 16 + 16 * 4 * 9 + 4 * 32 + (32 + 64) + 4 * (128 + 64) + 650
    )
    assert lora == expected == 9272
    assert lora / full < 0.20


# -- KL to the parent -------------------------------------------------------------


def test_kl_term_zero_for_equal_child_positive_otherwise(digits):
    torch.manual_seed(0)
    parent = MLPEmbedder(64, 10, hidden_dims=(16,), dropout=0.0)
    x = torch.from_numpy(digits[0][:40])
    y = torch.from_numpy(digits[1][:40])
    same = KLToParentModule(copy.deepcopy(parent), parent, weight=3.0).train()
    same(x)
    assert same.auxiliary_loss(y).item() == 0.0

    other = copy.deepcopy(parent)
    with torch.no_grad():
        other.output.bias += torch.arange(10.0)
    for T in (1.0, 2.0):
        module = KLToParentModule(other, parent, weight=3.0, temperature=T).train()
        logits = module(x)
        with torch.no_grad():
            p = torch.softmax(parent(x) / T, 1)
            q = torch.softmax(logits / T, 1)
            expected = 3.0 * T * T * (p * (p.log() - q.log())).sum(1).mean()
        loss = module.auxiliary_loss(y)
        assert loss.item() > 0
        torch.testing.assert_close(loss, expected)
        loss.backward()
        assert other.output.bias.grad is not None
        assert parent.output.bias.grad is None

    module.eval()
    module(x)
    with pytest.raises(RuntimeError, match="training mode"):
        module.auxiliary_loss(y)


def test_kl_adds_child_auxiliary_loss(parents, digits):
    parent = parents["deepmoe"].module_
    child = copy.deepcopy(parent)
    module = KLToParentModule(child, parent, weight=0.0).train()
    x = torch.from_numpy(digits[0][:20])
    y = torch.from_numpy(digits[1][:20])
    module(x)
    torch.testing.assert_close(module.auxiliary_loss(y), child.auxiliary_loss(y))
    residual = ResidualExpertModule(parent).train()
    residual(x)
    torch.testing.assert_close(
        residual.auxiliary_loss(y), residual.correction.auxiliary_loss(y)
    )


@pytest.mark.parametrize("kind", ["finetune", "lora"])
def test_larger_kl_weight_keeps_expert_closer_to_parent(parents, digits, kind):
    X, y = digits
    parent = parents["mlp"]
    P = predict_proba(parent, X)
    rows = np.flatnonzero(y < 3)
    kl = []
    for weight in (0.0, 10.0):
        expert = make_expert_net(parent, kind, kl_weight=weight, random_state=0)
        expert.set_params(lr=1e-2)
        train_net(expert, X[rows], y[rows], seed=3, stage="kl", partial=True,
                  max_epochs=3)
        kl.append(_mean_kl(P, predict_proba(expert, X)))
    # Without the term the expert forgets the classes its cluster lacks.
    assert kl[0] > 0.1
    assert kl[1] < 0.25 * kl[0]


# -- determinism, embeddings ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_under_a_seed(parents, digits, kind):
    X, y = digits
    rows = np.flatnonzero(y >= 5)
    outs = []
    for _ in range(2):
        expert = make_expert_net(parents["mlp"], kind, kl_weight=0.3, random_state=7)
        train_net(expert, X[rows], y[rows], seed=5, stage="seeded", partial=True,
                  max_epochs=1)
        outs.append(predict_proba(expert, X))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_lora_init_seeded_and_global_rng_untouched(parents):
    parent = parents["mlp"].module_
    state = torch.random.get_rng_state()
    a = lora_expert(parent, random_state=1).body[0].lora_A.weight
    b = lora_expert(parent, random_state=1).body[0].lora_A.weight
    c = lora_expert(parent, random_state=2).body[0].lora_A.weight
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("kind", KINDS)
def test_embed_shapes(parents, digits, name, kind):
    X = digits[0][:25]
    parent = parents[name]
    expert = make_expert_net(parent, kind, kl_weight=1.0, random_state=0)
    z = embed(expert, X)
    assert z.shape == (25, 16)
    # Before training an expert's embedding is its parent's.
    np.testing.assert_allclose(z, embed(parent, X), rtol=0, atol=1e-6)


def test_residual_embeds_with_the_correction(parents, digits):
    X, y = digits
    expert = make_expert_net(parents["mlp"], "residual")
    train_net(expert, X[y < 3], y[y < 3], seed=1, stage="residual", partial=True,
              max_epochs=2)
    z = embed(expert, X[:10])
    np.testing.assert_array_equal(z, embed(expert.module_.correction, X[:10]))
    assert np.abs(z - embed(parents["mlp"], X[:10])).max() > 1e-4


# -- copies and pickles -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["residual", "lora"])
def test_deepcopy_is_independent(parents, digits, kind):
    X, y = digits
    expert = make_expert_net(parents["mlp"], kind, random_state=0)
    clone = copy.deepcopy(expert)
    np.testing.assert_array_equal(predict_proba(clone, X), predict_proba(expert, X))
    assert clone.parent_net_ is not expert.parent_net_
    before = predict_proba(expert, X)
    train_net(clone, X[y < 3], y[y < 3], seed=1, stage="copy", partial=True,
              max_epochs=1)
    np.testing.assert_array_equal(predict_proba(expert, X), before)


def test_pickle_stores_shared_weights_once(digits):
    X, y = digits
    parent = _parent(digits, "mlp", epochs=1, hidden_dims=(256, 128))
    alone = len(pickle.dumps(parent))
    loras = [make_expert_net(parent, "lora", random_state=i) for i in range(3)]
    for i, e in enumerate(loras):
        train_net(e, X[y == i], y[y == i], seed=i, stage="lora", partial=True,
                  max_epochs=1)
    blob = pickle.dumps([parent, *loras])
    # Each LoRA expert adds its adapters and head, not the parent's weights.
    assert (len(blob) - alone) / 3 < 0.15 * alone
    finetuned = [make_expert_net(parent, "finetune") for _ in range(3)]
    assert (len(pickle.dumps([parent, *finetuned])) - alone) / 3 > 0.9 * alone

    parent2, *loras2 = pickle.loads(blob)
    for e, e2 in zip(loras, loras2):
        assert e2.parent_net_ is parent2
        assert e2.module_.body[0].base is parent2.module_.body[0]
        np.testing.assert_array_equal(predict_proba(e2, X), predict_proba(e, X))
        assert e2.module is e2.module_
    # Loaded experts still train only their own parameters.
    saved = _state(parent2.module_)
    train_net(loras2[0], X, y, seed=0, stage="loaded", partial=True, max_epochs=1)
    _assert_same_state(parent2.module_, saved)


@pytest.mark.parametrize("kind", KINDS)
def test_pickle_alone_and_with_parent(parents, digits, kind):
    X = digits[0]
    parent = parents["conv"]
    expert = make_expert_net(parent, kind, kl_weight=0.5, random_state=0)
    expected = predict_proba(expert, X)
    alone = pickle.loads(pickle.dumps(expert))
    np.testing.assert_array_equal(predict_proba(alone, X), expected)
    parent2, expert2 = pickle.loads(pickle.dumps([parent, expert]))
    np.testing.assert_array_equal(predict_proba(expert2, X), expected)
    if kind != "finetune":
        assert expert2.parent_net_ is parent2
        frozen = {id(p) for p in parent2.module_.parameters()}
        own = {id(p) for _, p in expert_parameters(expert2.module_)}
        every = {id(p) for p in expert2.module_.parameters()}
        assert every - own <= frozen and every - own


def test_module_pickle_shares_parent_weights():
    parent = MLPEmbedder(784, 10, hidden_dims=(128, 64))
    expert = lora_expert(parent, random_state=0)
    p_size = len(pickle.dumps(parent))
    both = len(pickle.dumps((parent, expert)))
    assert both - p_size < 0.10 * p_size
    parent2, expert2 = pickle.loads(pickle.dumps((parent, expert)))
    assert expert2.body[0].base is parent2.body[0]


# -- experts of experts -------------------------------------------------------------


@pytest.mark.parametrize("first", KINDS)
@pytest.mark.parametrize("second", KINDS)
def test_expert_of_an_expert(parents, digits, first, second):
    X, y = digits
    root = parents["mlp"]
    root_state = _state(root.module_)
    child = make_expert_net(root, first, kl_weight=0.5, random_state=0)
    train_net(child, X[y < 5], y[y < 5], seed=1, stage="child", partial=True,
              max_epochs=1)
    child_proba = predict_proba(child, X)
    grandchild = make_expert_net(child, second, random_state=1)
    np.testing.assert_array_equal(predict_proba(grandchild, X), child_proba)
    train_net(grandchild, X[y < 2], y[y < 2], seed=2, stage="grandchild",
              partial=True, max_epochs=1)
    np.testing.assert_array_equal(predict_proba(child, X), child_proba)
    _assert_same_state(root.module_, root_state)
    assert np.abs(predict_proba(grandchild, X) - child_proba).max() > 1e-4
    root2, child2, grand2 = pickle.loads(pickle.dumps([root, child, grandchild]))
    np.testing.assert_array_equal(
        predict_proba(grand2, X), predict_proba(grandchild, X)
    )
    np.testing.assert_array_equal(predict_proba(child2, X), child_proba)


# -- errors -----------------------------------------------------------------------


def test_clear_errors(parents):
    net = parents["mlp"]
    with pytest.raises(ValueError, match="kind must be one of"):
        make_expert_net(net, "adapter")
    with pytest.raises(ValueError, match="fitted"):
        make_expert_net(make_classifier_net(MLPEmbedder, n_features=4, n_classes=2))
    with pytest.raises(TypeError, match="skorch net"):
        make_expert_net(net.module_)
    with pytest.raises(ValueError, match="rank"):
        make_expert_net(net, "lora", rank=0)
    with pytest.raises(ValueError, match="alpha"):
        lora_expert(net.module_, alpha=-1.0)
    with pytest.raises(ValueError, match="kl_weight"):
        make_expert_net(net, "residual", kl_weight=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        KLToParentModule(net.module_, net.module_, temperature=0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        ResidualExpertModule(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(TypeError, match="nn.Module"):
        lora_expert("not a module")


def test_docstring_examples():
    result = doctest.testmod(experts_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10
    assert result.failed == 0
