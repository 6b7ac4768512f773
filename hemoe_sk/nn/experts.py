"""Experts that cannot fragment: residual, LoRA and KL-anchored experts.

A node's expert for one cluster starts from the node's network (the *parent*)
and trains on the cluster's rows only. Fine-tuning a full copy lets it forget
whatever the parent knew about the rest of the data. The experts here keep
the parent frozen and learn only a change to it:

* :class:`ResidualExpertModule` adds a trainable *correction* network, a copy
  of the parent whose output layer starts at zero:
  :math:`f(x) = f_{\\text{parent}}(x) + c(x)`.
* :func:`lora_expert` copies the parent's module tree and replaces every hidden
  ``nn.Linear`` (and ``nn.Conv2d``) by a low-rank adapter around the parent's
  own frozen layer, :math:`W x + \\frac{\\alpha}{r} B A x`; experts share the
  parent's weights in memory and only own their adapters and output layer.
* :class:`KLToParentModule` wraps any expert and adds
  :math:`w\\, T^2\\, \\mathrm{KL}(p_{\\text{parent}} \\,\\|\\, p_{\\text{expert}})`
  to its training loss.

:func:`make_expert_net` turns a fitted skorch net into an expert net of one of
these kinds, ready for :func:`hemoe_sk.nn.train_net` with
``partial=True``.

Frozen means *not trained by the expert*: the expert reads the parent's
parameters detached from autograd (``no_grad`` for whole parent modules,
``weight.detach()`` inside adapters) and never gives them to its optimizer.
The parent's own ``requires_grad`` flags are left alone, so the parent net
(or a fine-tuned copy of it) still trains normally.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import numbers

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state
from skorch import NeuralNet
from torch import nn
from torch.nn import functional as F

from .build import HemoeNeuralNetClassifier
from .inference import layer_input
from .training import torch_seed

__all__ = [
    "EXPERT_KINDS",
    "ExpertNeuralNetClassifier",
    "KLToParentModule",
    "LoRAConv2d",
    "LoRALinear",
    "ResidualExpertModule",
    "expert_parameter_bytes",
    "expert_parameters",
    "lora_expert",
    "make_expert_net",
]

#: The kinds of expert :func:`make_expert_net` builds.
EXPERT_KINDS = ("finetune", "residual", "lora")

# While an ExpertNeuralNetClassifier pickles its module, the ids of its
# parent's modules mapped to their paths: frozen references found there are
# written as paths, not weights (see _FrozenHolder.__getstate__).
_SHARED_PATHS = contextvars.ContextVar("hemoe_sk_shared_paths", default=None)


class _SharedRef(nn.Module):
    """Stand-in for a frozen module of the parent while pickled.

    :class:`ExpertNeuralNetClassifier` replaces it by the parent's module at
    ``path`` as soon as it is unpickled; one left over means the expert was
    unpickled without its parent.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            f"This expert's frozen parent module {self.path!r} was not restored: "
            "unpickle the expert through its skorch net (ExpertNeuralNetClassifier), "
            "which holds the parent."
        )


class _FrozenHolder:
    """Mixin for modules holding frozen references to another module.

    ``_frozen_children`` names the submodules that belong to someone else (the
    parent): they are never trained by the holder, stay in eval mode, and
    their parameters are not the expert's own (:func:`expert_parameters`).
    """

    _frozen_children = ()

    def frozen_modules(self):
        """The frozen submodules, as ``(name, module)`` pairs."""
        return [
            (name, self._modules[name])
            for name in self._frozen_children
            if self._modules.get(name) is not None
        ]

    def train(self, mode=True):
        super().train(mode)
        for _, module in self.frozen_modules():
            module.eval()
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        shared = _SHARED_PATHS.get()
        if shared:
            modules = dict(state["_modules"])
            for name, module in self.frozen_modules():
                if id(module) in shared:
                    modules[name] = _SharedRef(shared[id(module)])
            state["_modules"] = modules
        return state


def _frozen_param_ids(module):
    """Identities of the parameters reached through frozen references."""
    ids = set()
    for m in module.modules():
        if isinstance(m, _FrozenHolder):
            for _, child in m.frozen_modules():
                ids.update(id(p) for p in child.parameters())
    return ids


def expert_parameters(module):
    """The parameters that belong to an expert alone.

    Parameters reached through a frozen reference to the parent (a LoRA
    adapter's base layer, a residual expert's parent, the parent of a
    :class:`KLToParentModule`) are shared and excluded.

    Parameters
    ----------
    module : torch.nn.Module
        An expert module (any module: a plain one owns all its parameters).

    Returns
    -------
    list of (str, torch.nn.Parameter)
        Named parameters, in ``named_parameters`` order.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"expert_parameters expects a torch nn.Module, got {type(module).__name__}."
        )
    frozen = _frozen_param_ids(module)
    return [(n, p) for n, p in module.named_parameters() if id(p) not in frozen]


def expert_parameter_bytes(module):
    """Bytes of the parameters an expert owns (shared frozen ones excluded).

    Parameters
    ----------
    module : torch.nn.Module or skorch net
        An expert module, or a net whose ``module_`` is one.

    Returns
    -------
    int

    Examples
    --------
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> from hemoe_sk.nn.experts import expert_parameter_bytes, lora_expert
    >>> parent = MLPEmbedder(784, 10, hidden_dims=(128, 64))
    >>> expert_parameter_bytes(parent)
    437544
    >>> expert_parameter_bytes(lora_expert(parent, rank=4))
    20264
    """
    module = getattr(module, "module_", module)
    return sum(p.numel() * p.element_size() for _, p in expert_parameters(module))


# -- walking a module tree ------------------------------------------------------


def _walk(module):
    """Pre-order walk of the modules an expert may change.

    Adapters are leaves, and frozen references are not entered.
    """
    seen = set()

    def visit(m):
        if id(m) in seen:
            return
        seen.add(id(m))
        yield m
        if isinstance(m, _LoRABase):
            return
        frozen = set(m._frozen_children) if isinstance(m, _FrozenHolder) else set()
        for name, child in m._modules.items():
            if child is not None and name not in frozen:
                yield from visit(child)

    yield from visit(module)


def _output_layer(module):
    """The module's output layer: its last trainable ``nn.Linear``."""
    linears = [m for m in _walk(module) if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear output layer: residual and "
            "LoRA experts need one (the layer a correction starts at zero from, "
            "or each expert's own head)."
        )
    return linears[-1]


def _copy_sharing_frozen(module, memo=None):
    """``copy.deepcopy(module)`` that keeps frozen references shared."""
    memo = {} if memo is None else memo
    for m in module.modules():
        if isinstance(m, _FrozenHolder):
            for _, child in m.frozen_modules():
                memo[id(child)] = child
    return copy.deepcopy(module, memo)


def _trainable_core(module):
    """The network an expert of ``module`` copies.

    A KL wrapper's child, or a residual expert's correction (a copy of a
    residual expert would carry its frozen parent inside the correction).
    """
    while isinstance(module, (KLToParentModule, ResidualExpertModule)):
        if isinstance(module, KLToParentModule):
            module = module.child
        else:
            module = module.correction
    return module


def _unwrap_kl(module):
    while isinstance(module, KLToParentModule):
        module = module.child
    return module


def _embedding(module, x):
    """``module.embed(x)``, or the input of its output layer."""
    fn = getattr(module, "embed", None)
    if callable(fn):
        return fn(x)
    return layer_input(module, _output_layer(module), x)


def _run_frozen(module, x):
    """Run a whole frozen module: eval mode, no autograd graph."""
    if module.training:
        module.eval()
    with torch.no_grad():
        return module(x)


# -- LoRA --------------------------------------------------------------------------


def _frozen_forward(layer, x):
    """``layer(x)`` with the layer's parameters detached from autograd.

    Gradients still flow to ``x``; none reach the layer's parameters.
    """
    if isinstance(layer, _LoRABase):
        return layer.frozen_forward(x)
    bias = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, nn.Linear):
        return F.linear(x, layer.weight.detach(), bias)
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, layer.weight.detach(), bias)
    raise TypeError(  # pragma: no cover
        f"No frozen forward for {type(layer).__name__}."
    )


class _LoRABase(_FrozenHolder, nn.Module):
    """A frozen base layer plus a trainable low-rank update ``B A``."""

    _frozen_children = ("base",)

    def _set_rank(self, rank, alpha):
        rank = int(rank)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank if rank else 0.0

    def forward(self, x):
        out = _frozen_forward(self.base, x)
        if self.rank:
            out = out + self.scaling * self.lora_B(self.lora_A(x))
        return out

    def frozen_forward(self, x):
        """This adapter's output with all its parameters detached."""
        out = _frozen_forward(self.base, x)
        if self.rank:
            out = out + self.scaling * _frozen_forward(
                self.lora_B, _frozen_forward(self.lora_A, x)
            )
        return out

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRALinear(_LoRABase):
    """A frozen linear layer plus a trainable low-rank update.

    .. math::

        y = W x + b + \\frac{\\alpha}{r} B A x,

    with :math:`W, b` the base layer's (shared, never trained here),
    :math:`A \\in \\mathbb{R}^{r \\times d_{in}}` initialised like an
    ``nn.Linear`` (Kaiming uniform) and :math:`B \\in \\mathbb{R}^{d_{out}
    \\times r}` at zero, so the adapter starts exactly at the base layer.

    Parameters
    ----------
    base : nn.Linear or LoRALinear
        The parent's layer, held by reference. An adapter may wrap another
        adapter (an expert of an expert); the inner one is frozen whole.
    rank : int, default=4
        Rank :math:`r` of the update; 0 keeps only the frozen base.
    alpha : float, optional
        Scale numerator; the update is multiplied by ``alpha / rank``.
        Defaults to ``rank`` (a scale of 1).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hemoe_sk.nn.experts import LoRALinear
    >>> base = nn.Linear(8, 3)
    >>> adapter = LoRALinear(base, rank=2)
    >>> adapter.base is base
    True
    >>> x = torch.randn(4, 8)
    >>> torch.equal(adapter(x), base(x))
    True
    """

    def __init__(self, base, rank=4, alpha=None):
        super().__init__()
        if not isinstance(base, (nn.Linear, LoRALinear)):
            raise TypeError(
                "LoRALinear wraps an nn.Linear or LoRALinear, got "
                f"{type(base).__name__}."
            )
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.base = base
        self._set_rank(rank, alpha)
        if self.rank:
            self.lora_A = nn.Linear(self.in_features, self.rank, bias=False)
            self.lora_B = nn.Linear(self.rank, self.out_features, bias=False)
            nn.init.zeros_(self.lora_B.weight)
            _same_device(base, self.lora_A, self.lora_B)


class LoRAConv2d(_LoRABase):
    """A frozen 2-D convolution plus a trainable low-rank update.

    .. math::

        y = K * x + b + \\frac{\\alpha}{r} B * (A * x),

    where :math:`A` is a convolution with the base's kernel size, stride,
    padding and dilation to :math:`r` channels (Kaiming uniform, as
    ``nn.Conv2d``) and :math:`B` a 1x1 convolution back to the base's output
    channels, initialised at zero.

    Parameters
    ----------
    base : nn.Conv2d or LoRAConv2d
        The parent's convolution, held by reference.
    rank : int, default=4
        Number of channels :math:`r` of the update; 0 keeps only the frozen
        base.
    alpha : float, optional
        Scale numerator; defaults to ``rank``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hemoe_sk.nn.experts import LoRAConv2d
    >>> base = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    >>> adapter = LoRAConv2d(base, rank=2)
    >>> x = torch.randn(2, 3, 6, 6)
    >>> adapter(x).shape, torch.equal(adapter(x), base(x))
    (torch.Size([2, 8, 6, 6]), True)
    """

    def __init__(self, base, rank=4, alpha=None):
        super().__init__()
        if not isinstance(base, (nn.Conv2d, LoRAConv2d)):
            raise TypeError(
                "LoRAConv2d wraps an nn.Conv2d or LoRAConv2d, got "
                f"{type(base).__name__}."
            )
        for name in (
            "in_channels", "out_channels", "kernel_size", "stride", "padding",
            "dilation", "padding_mode",
        ):
            setattr(self, name, getattr(base, name))
        self.base = base
        self._set_rank(rank, alpha)
        if self.rank:
            self.lora_A = nn.Conv2d(
                self.in_channels, self.rank, self.kernel_size, stride=self.stride,
                padding=self.padding, dilation=self.dilation, bias=False,
                padding_mode=self.padding_mode,
            )
            self.lora_B = nn.Conv2d(self.rank, self.out_channels, 1, bias=False)
            nn.init.zeros_(self.lora_B.weight)
            _same_device(base, self.lora_A, self.lora_B)


def _same_device(base, *new):
    p = next(base.parameters(), None)
    if p is not None:
        for m in new:
            m.to(device=p.device, dtype=p.dtype)


def _check_rank_alpha(rank, alpha):
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}.")
    if alpha is not None and (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not np.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"alpha must be None or a positive number, got {alpha!r}.")


def _seed_from(random_state):
    if random_state is None:
        return None
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def lora_expert(parent, rank=4, alpha=None, conv=True, *, random_state=None):
    """A LoRA expert of ``parent``: its own class, sharing the parent's weights.

    The parent's module tree is copied without the weights of its layers:
    every ``nn.Linear`` except the output layer (the last one) and, with
    ``conv=True``, every ``nn.Conv2d`` becomes an adapter
    (:class:`LoRALinear`, :class:`LoRAConv2d`) holding a *reference* to the
    parent's layer plus trainable low-rank factors. The output layer is a
    trainable copy, each expert's own head. Any other layer with parameters
    (a normalisation layer, say) is copied and trained with the expert.
    Methods such as ``embed`` keep working: they are bound to the copy, whose
    submodules were replaced.

    Before training the expert computes exactly what the parent computes.

    Parameters
    ----------
    parent : torch.nn.Module
        The trained parent module (left unchanged).
    rank : int, default=4
        Rank of every adapter.
    alpha : float, optional
        Adapter scale numerator (the update is scaled by ``alpha / rank``);
        defaults to ``rank``.
    conv : bool, default=True
        Adapt ``nn.Conv2d`` layers too; with ``False`` they stay frozen.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation of the ``A`` factors; ``None`` uses torch's
        global generator. The global torch RNG is left unchanged when set.

    Returns
    -------
    torch.nn.Module
        A module of ``type(parent)``.

    Examples
    --------
    >>> import torch
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> from hemoe_sk.nn.experts import lora_expert
    >>> parent = MLPEmbedder(20, 3, hidden_dims=(16, 8)).eval()
    >>> expert = lora_expert(parent, rank=2, random_state=0).eval()
    >>> type(expert).__name__, expert.body[0].base is parent.body[0]
    ('MLPEmbedder', True)
    >>> x = torch.randn(5, 20)
    >>> torch.equal(expert(x), parent(x)), expert.embed(x).shape
    (True, torch.Size([5, 8]))
    """
    if not isinstance(parent, nn.Module):
        raise TypeError(
            f"lora_expert expects a torch nn.Module, got {type(parent).__name__}."
        )
    _check_rank_alpha(rank, alpha)
    head = _output_layer(parent)
    memo = {}
    seed = _seed_from(random_state)
    with torch_seed(seed) if seed is not None else contextlib.nullcontext():
        for m in _walk(parent):
            if isinstance(m, (LoRALinear, nn.Linear)) and m is not head:
                memo[id(m)] = LoRALinear(m, rank, alpha)
            elif isinstance(m, (LoRAConv2d, nn.Conv2d)):
                memo[id(m)] = LoRAConv2d(m, rank if conv else 0, alpha)
    return _copy_sharing_frozen(parent, memo)


# -- residual expert ------------------------------------------------------------


class ResidualExpertModule(_FrozenHolder, nn.Module):
    """A frozen parent plus a trainable correction network.

    .. math::

        f(x) = f_{\\text{parent}}(x) + c(x),

    where :math:`c` is a copy of the parent whose output layer (its last
    ``nn.Linear``) has zero weight and bias, so :math:`f` equals the parent
    exactly before training. The parent runs in eval mode without autograd
    and is never changed; the correction learns what the cluster needs beyond
    the parent.

    Parameters
    ----------
    parent : torch.nn.Module
        The trained parent, held by reference. Its forward must end with its
        last ``nn.Linear`` (true of every hemoe_sk embedder), so that zeroing
        that layer zeroes the correction.

    Attributes
    ----------
    parent : torch.nn.Module
        The frozen parent.
    correction : torch.nn.Module
        The trainable correction network (the expert's own parameters).

    Examples
    --------
    >>> import torch
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> from hemoe_sk.nn.experts import ResidualExpertModule
    >>> parent = MLPEmbedder(20, 3, hidden_dims=(16, 8)).eval()
    >>> expert = ResidualExpertModule(parent)
    >>> x = torch.randn(5, 20)
    >>> torch.equal(expert(x), parent(x)), expert.embed(x).shape
    (True, torch.Size([5, 8]))
    """

    _frozen_children = ("parent",)

    def __init__(self, parent):
        super().__init__()
        if not isinstance(parent, nn.Module):
            raise TypeError(
                "ResidualExpertModule expects a torch nn.Module, got "
                f"{type(parent).__name__}."
            )
        correction = _copy_sharing_frozen(_trainable_core(parent))
        head = _output_layer(correction)
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
        self.parent = parent
        self.correction = correction

    def forward(self, x):
        return _run_frozen(self.parent, x) + self.correction(x)

    def embed(self, x):
        """The correction network's embedding (the specialised representation)."""
        return _embedding(self.correction, x)

    def auxiliary_loss(self, y_true):
        """The correction's own auxiliary loss (DeepMoE's), else zero."""
        aux = getattr(self.correction, "auxiliary_loss", None)
        if callable(aux):
            return aux(y_true)
        return y_true.new_zeros((), dtype=torch.float32)


# -- KL to the parent -------------------------------------------------------------


class KLToParentModule(_FrozenHolder, nn.Module):
    """An expert whose training loss keeps it close to its frozen parent.

    ``forward`` returns ``child(x)``. In training mode it also computes the
    parent's logits for the batch (eval mode, no autograd), and
    :meth:`auxiliary_loss` returns

    .. math::

        w \\, T^2 \\, \\frac{1}{B} \\sum_{b=1}^{B}
        \\mathrm{KL}\\big(\\mathrm{softmax}(z^{p}_b / T) \\,\\big\\|\\,
        \\mathrm{softmax}(z^{c}_b / T)\\big)

    plus the child's own ``auxiliary_loss`` when it has one.
    :class:`~hemoe_sk.nn.build.HemoeNeuralNetClassifier` adds it to the
    cross-entropy during training: the expert fits its cluster while staying
    close to the parent's predictions on that cluster's rows.

    Parameters
    ----------
    child : torch.nn.Module
        The expert being trained (a fine-tuned copy, a residual or LoRA expert).
    parent : torch.nn.Module
        The frozen parent, held by reference.
    weight : float, default=1.0
        :math:`w`; 0 turns the term off (the parent is then not evaluated).
    temperature : float, default=1.0
        :math:`T` (the :math:`T^2` factor keeps gradient sizes comparable
        across temperatures, as in distillation).

    Examples
    --------
    >>> import copy
    >>> import torch
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> from hemoe_sk.nn.experts import KLToParentModule
    >>> parent = MLPEmbedder(20, 3, hidden_dims=(16, 8), dropout=0.0)
    >>> module = KLToParentModule(copy.deepcopy(parent), parent, weight=2.0)
    >>> logits = module(torch.randn(5, 20))
    >>> module.auxiliary_loss(torch.zeros(5, dtype=torch.long)).item()
    0.0
    """

    _frozen_children = ("parent",)

    def __init__(self, child, parent, weight=1.0, temperature=1.0):
        super().__init__()
        for name, value in (("child", child), ("parent", parent)):
            if not isinstance(value, nn.Module):
                raise TypeError(
                    f"KLToParentModule's {name} must be a torch nn.Module, got "
                    f"{type(value).__name__}."
                )
        _check_nonneg("weight", weight)
        _check_nonneg("temperature", temperature)
        if temperature == 0:
            raise ValueError("temperature must be > 0.")
        self.child = child
        self.parent = parent
        self.weight = float(weight)
        self.temperature = float(temperature)
        self._cache = {}

    def forward(self, x):
        out = self.child(x)
        if self.training:
            parent_logits = _run_frozen(self.parent, x) if self.weight > 0 else None
            self._cache = {"child": out, "parent": parent_logits}
        else:
            self._cache = {}
        return out

    def embed(self, x):
        """The child's embedding."""
        return _embedding(self.child, x)

    def kl_to_parent(self, child_logits, parent_logits):
        """:math:`T^2 \\mathrm{KL}(p_{parent} \\| p_{child})`, batch mean."""
        T = self.temperature
        return (T * T) * F.kl_div(
            F.log_softmax(child_logits / T, dim=1),
            F.log_softmax(parent_logits / T, dim=1),
            log_target=True,
            reduction="batchmean",
        )

    def auxiliary_loss(self, y_true):
        """The weighted KL term for the last training batch, plus the child's."""
        if "child" not in self._cache:
            raise RuntimeError(
                "auxiliary_loss() needs a forward() call in training mode first."
            )
        cached = self._cache
        loss = cached["child"].new_zeros(())
        if cached["parent"] is not None:
            kl = self.kl_to_parent(cached["child"], cached["parent"])
            loss = loss + self.weight * kl
        aux = getattr(self.child, "auxiliary_loss", None)
        if callable(aux):
            loss = loss + aux(y_true)
        return loss

    def __getstate__(self):
        # Cached logits belong to the last batch's autograd graph.
        state = super().__getstate__()
        state["_cache"] = {}
        return state


def _check_nonneg(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


# -- the skorch side --------------------------------------------------------------


class ExpertNeuralNetClassifier(HemoeNeuralNetClassifier):
    """skorch classifier for an expert that shares frozen modules with a parent.

    Built by :func:`make_expert_net`; ``module`` is the expert module instance
    and ``parent_net_`` the parent net. Compared with its base class:

    * the optimizer receives only the expert's own trainable parameters
      (:meth:`get_all_learnable_params`);
    * pickling and ``copy.deepcopy`` write the frozen parent modules as
      references into ``parent_net_``: pickled together with its parent
      (a tree pickles all its nets at once), an expert stores the shared
      weights once and shares them again after loading. Pickled alone it
      brings its parent along.

    ``fit`` does not reset an expert: skorch keeps a module passed as an
    instance, so ``fit`` continues from the current weights with a fresh
    optimizer.
    """

    def get_all_learnable_params(self):
        frozen = set()
        for name in self._modules:
            module = getattr(self, name + "_", None)
            if isinstance(module, nn.Module):
                frozen |= _frozen_param_ids(module)
        for name, param in super().get_all_learnable_params():
            if id(param) not in frozen and param.requires_grad:
                yield name, param

    def _parent_module(self):
        parent = getattr(self, "parent_net_", None)
        return getattr(parent, "module_", None)

    def __getstate__(self):
        parent = self._parent_module()
        shared = {}
        if parent is not None:
            shared = {id(m): path for path, m in parent.named_modules()}
        token = _SHARED_PATHS.set(shared)
        try:
            state = super().__getstate__()
        finally:
            _SHARED_PATHS.reset(token)
        # The module parameter is the same object as module_, which skorch
        # has just stored (parent references included): don't store it twice.
        module = getattr(self, "module_", None)
        if module is not None and state.get("module") is module:
            state["module"] = _SAME_AS_MODULE_
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        module = getattr(self, "module_", None)
        if isinstance(module, nn.Module):
            self._relink(module)
        if isinstance(self.__dict__.get("module"), _SameAsModule):
            self.module = self.module_

    def _relink(self, module):
        parent = self._parent_module()
        for m in module.modules():
            if not isinstance(m, _FrozenHolder):
                continue
            for name in m._frozen_children:
                ref = m._modules.get(name)
                if isinstance(ref, _SharedRef):
                    if parent is None:
                        raise RuntimeError(
                            "Cannot restore an expert net: its parent net is missing."
                        )
                    m._modules[name] = parent.get_submodule(ref.path)


class _SameAsModule:
    """Pickled in place of an expert net's ``module`` (it is ``module_``)."""

    def __reduce__(self):
        return (_same_as_module, ())


def _same_as_module():
    return _SAME_AS_MODULE_


_SAME_AS_MODULE_ = _SameAsModule()


def _expert_net(parent_net, module):
    """An initialised :class:`ExpertNeuralNetClassifier` around ``module``."""
    params = {
        k: clone(v, safe=False)
        for k, v in parent_net.get_params(deep=False).items()
        if k != "module" and not k.startswith("module__")
    }
    net = ExpertNeuralNetClassifier(module=module, **params)
    net.parent_net_ = parent_net
    net.initialize()
    return net


def make_expert_net(
    net,
    kind="finetune",
    *,
    rank=4,
    alpha=None,
    conv=True,
    kl_weight=0.0,
    temperature=1.0,
    random_state=None,
):
    """A new expert net started from a fitted (parent) skorch net.

    The result is ready for
    ``hemoe_sk.nn.train_net(expert, X, y, seed=..., stage=...,
    partial=True, max_epochs=...)`` and works with
    :func:`hemoe_sk.nn.embed`, :func:`hemoe_sk.nn.predict_proba`,
    ``copy.deepcopy`` and ``pickle``. The parent is never changed, neither by
    building nor by training the expert.

    Parameters
    ----------
    net : skorch.NeuralNetClassifier
        The fitted parent net, whose module returns logits.
    kind : {"finetune", "residual", "lora"}, default="finetune"
        * ``"finetune"``: a deep copy of the whole net (all weights trainable,
          optimizer state and history kept), as the tree has always done;
        * ``"residual"``: a :class:`ResidualExpertModule` on the parent;
        * ``"lora"``: a :func:`lora_expert` of the parent module, sharing its
          weights (not copied).
    rank, alpha, conv :
        LoRA settings, see :func:`lora_expert` (``kind="lora"`` only).
    kl_weight : float, default=0.0
        When positive, the expert module is wrapped in a
        :class:`KLToParentModule` against the frozen parent with this weight.
    temperature : float, default=1.0
        Temperature of the KL term.
    random_state : int, RandomState instance or None, default=None
        Seeds the LoRA initialisation (the only random step here).

    Returns
    -------
    skorch net
        For a plain fine-tuned copy, a net of the parent's class; otherwise an
        initialised :class:`ExpertNeuralNetClassifier` with the parent's
        training settings, whose optimizer holds only the expert's own
        trainable parameters and whose ``parent_net_`` is ``net``.

    Examples
    --------
    >>> import numpy as np
    >>> from hemoe_sk.nn import MLPEmbedder
    >>> from hemoe_sk.nn import predict_proba, train_net
    >>> from hemoe_sk.nn.build import make_classifier_net
    >>> from hemoe_sk.nn.experts import make_expert_net
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(60, 5).astype(np.float32)
    >>> y = (X[:, 0] > 0.5).astype(np.int64)
    >>> parent = make_classifier_net(MLPEmbedder, n_features=5, n_classes=2,
    ...                              module_params={"hidden_dims": (8,)})
    >>> parent = train_net(parent, X, y, seed=0, stage="parent", max_epochs=2)
    >>> expert = make_expert_net(parent, "lora", rank=2, random_state=0)
    >>> np.allclose(predict_proba(expert, X), predict_proba(parent, X))
    True
    >>> expert = train_net(expert, X[y == 1], y[y == 1], seed=1, stage="expert",
    ...                    partial=True, max_epochs=2)
    >>> predict_proba(expert, X).shape
    (60, 2)
    """
    if not isinstance(net, NeuralNet):
        raise TypeError(
            f"make_expert_net expects a fitted skorch net, got {type(net).__name__}."
        )
    if not getattr(net, "initialized_", False) or not isinstance(
        getattr(net, "module_", None), nn.Module
    ):
        raise ValueError(
            "make_expert_net needs a fitted (initialized) parent net; call "
            "train_net or fit on it first."
        )
    if kind not in EXPERT_KINDS:
        raise ValueError(f"kind must be one of {EXPERT_KINDS}, got {kind!r}.")
    _check_nonneg("kl_weight", kl_weight)
    if kind == "lora":
        _check_rank_alpha(rank, alpha)
    parent = _unwrap_kl(net.module_)
    plain = not isinstance(net, ExpertNeuralNetClassifier)
    if kind == "finetune" and kl_weight == 0 and plain:
        return copy.deepcopy(net)
    if kind == "finetune":
        module = _copy_sharing_frozen(parent)
    elif kind == "residual":
        module = ResidualExpertModule(parent)
    else:
        module = lora_expert(parent, rank, alpha, conv, random_state=random_state)
    if kl_weight > 0:
        module = KLToParentModule(
            module, parent, weight=kl_weight, temperature=temperature
        )
    return _expert_net(net, module)
