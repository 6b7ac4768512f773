"""Helpers shared by several test files (not tests themselves)."""

import contextlib

import pytest
import torch

import hemoe_sk.node as node_module
from hemoe_sk.nn import MLPEmbedder
from hemoe_sk.node import NodeExpertsClassifier

#: The network and training of 0.3's defaults (a plain MLP, Adam at a fixed
#: batch size, every epoch trained, no held-out rows drawn inside the nets).
#: Tests about the tree's mechanics (what splits, what routes, what is saved)
#: on tiny data pin it, so that they do not depend on the default recipe,
#: which tests/test_recipe.py covers.
CLASSIC_NET = dict(
    embedder=MLPEmbedder,
    optimizer=torch.optim.Adam,
    batch_size=64,
    early_stopping=0.0,
    lr_schedule="constant",
)


@contextlib.contextmanager
def splits_preferred():
    """Keep a split whenever one is eligible.

    Whether a split beats the unsplit node on tiny data is a coin toss; tests
    about what happens *inside* a tree need trees that route. A split
    candidate's held-out score gets a bonus of 1 and the paired split test
    always passes: the same tree ``split_test="none"`` grows, for estimators
    built where that parameter cannot be passed.
    """
    original = NodeExpertsClassifier.score
    original_decide = node_module.decide_split

    def score(self, P, y, sample_weight=None):
        bonus = 0.0 if getattr(self, "router_", None) is None else 1.0
        return original(self, P, y, sample_weight) + bonus

    def keep(*args, **kwargs):
        decision = original_decide(*args, **kwargs)
        decision.keep = True
        return decision

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NodeExpertsClassifier, "score", score)
        mp.setattr(node_module, "decide_split", keep)
        yield
