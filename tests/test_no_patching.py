"""The tests observe hemoe_sk; none of them patches it.

A test that replaces a hemoe_sk function or attribute (``monkeypatch.setattr``,
``unittest.mock.patch``) tests the patch, and silently stops testing anything
when the code it patched moves: observe what a fit records instead
(``Node.training``, ``node.search``, a skorch callback on a given net, a
clusterer or autoencoder handed to the public API). Patching the environment
or other libraries stays allowed.
"""

import ast
from pathlib import Path

import pytest

TESTS = sorted(Path(__file__).parent.glob("*.py"))

#: Calls that replace an attribute: ``<anything>.setattr(target, ...)``,
#: ``patch(target, ...)``, ``patch.object(target, ...)``.
_PATCHERS = {"setattr", "patch", "object", "delattr"}


def _hemoe_names(tree):
    """Names that a module binds to hemoe_sk modules or their contents."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "hemoe_sk":
                    names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "hemoe_sk":
                names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root(expr):
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _patches_of_hemoe(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    hemoe = _hemoe_names(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in _PATCHERS or name == "object" and _root(func) != "patch":
            continue
        target = node.args[0]
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            hit = target.value.split(".")[0] == "hemoe_sk"
        else:
            hit = _root(target) in hemoe
        if hit:
            found.append((node.lineno, f"{path.name}:{node.lineno}: {ast.unparse(node)}"))
    return [text for _, text in sorted(found)]


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_no_test_patches_hemoe_sk(path):
    assert _patches_of_hemoe(path) == []


def test_the_check_finds_a_patch(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import hemoe_sk.node as node_module\n"
        "from hemoe_sk.node import NodeExpertsClassifier\n"
        "from unittest.mock import patch\n"
        "import torch\n"
        "def test_a(monkeypatch):\n"
        "    monkeypatch.setattr(node_module, 'train_net', None)\n"
        "    monkeypatch.setattr(NodeExpertsClassifier.score, '__doc__', '')\n"
        "    monkeypatch.setattr('hemoe_sk.node.decide_split', None)\n"
        "    patch.object(NodeExpertsClassifier, 'score')\n"
        "    monkeypatch.setattr(torch, 'manual_seed', None)\n"
        "    monkeypatch.setenv('OMP_NUM_THREADS', '1')\n"
        "    patch('torch.cuda.is_available', lambda: False)\n"
    )
    lines = [hit.split(":")[1] for hit in _patches_of_hemoe(sample)]
    assert lines == ["6", "7", "8", "9"]
