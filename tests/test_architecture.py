"""The package's import graph: no cycle, and no module importing one above it.

The graph is read from the source with :mod:`ast` (nothing is imported), and
counts every import, also those inside functions (a lazy import is still a
dependency: ``classifier -> inspection -> classifier`` was one). The layers
below are the architecture that the README and ``docs/architecture.rst``
describe, as data: a module may import its own layer and the layers below.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hemoe_sk"

#: Lowest first. A name stands for the module and everything under it (a
#: package's submodules); leading underscores are ignored when matching, so
#: ``hemoe_sk._tree`` is placed as ``hemoe_sk.tree``. A module that matches
#: no entry fails the test: place it here, where its role puts it.
LAYERS = [
    ("helpers", ["hemoe_sk.docstrings"]),
    ("networks", ["hemoe_sk.nn"]),
    ("estimator base", ["hemoe_sk.base"]),
    ("clusterers", ["hemoe_sk.cluster"]),
    ("tree and search",
     ["hemoe_sk.tree", "hemoe_sk.node", "hemoe_sk.refine", "hemoe_sk.search",
      "hemoe_sk.split_test", "hemoe_sk.task"]),
    ("grower", ["hemoe_sk.hierarchy", "hemoe_sk.grower"]),
    ("estimators",
     ["hemoe_sk.classifier", "hemoe_sk.regressor", "hemoe_sk.moe",
      "hemoe_sk.moe_regressor", "hemoe_sk.baselines"]),
    ("persistence", ["hemoe_sk.persistence"]),
    ("inspection", ["hemoe_sk.inspection"]),
    ("command line", ["hemoe_sk.cli"]),
    ("public package", ["hemoe_sk"]),
]


def _plain(name):
    return ".".join(part.lstrip("_") for part in name.split("."))


def layer_of(module):
    """Index in :data:`LAYERS` of the longest entry that is ``module`` or a
    package above it (``None`` when no entry matches)."""
    plain = _plain(module)
    best, best_len = None, -1
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (plain == name or plain.startswith(name + ".")) and len(name) > best_len:
                best, best_len = index, len(name)
    return best


def module_files(package=PACKAGE):
    """``{dotted module name: path}`` of every module of the package."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(files):
    """``{module: set of hemoe_sk modules it imports}``; ``from pkg import
    name`` counts as importing ``pkg.name`` where that is a module."""
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [(source, [alias.name for alias in node.names])]
            else:
                continue
            for source, names in targets:
                if source != "hemoe_sk" and not source.startswith("hemoe_sk."):
                    continue
                subs = [f"{source}.{n}" for n in names if f"{source}.{n}" in files]
                deps.update(subs or [source])
                if len(subs) < len(names):  # names defined in ``source`` itself
                    deps.add(source)
        deps.discard(module)
        graph[module] = {d for d in deps if d in files}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or ``None``."""
    state = {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, stack)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [])
            if found:
                return found
    return None


GRAPH = import_graph(module_files())


def test_graph_is_read():
    """The reader sees the imports it must see (a check of the reader)."""
    assert "hemoe_sk.tree" in GRAPH["hemoe_sk.node"]
    assert "hemoe_sk.inspection" in GRAPH["hemoe_sk.cli"]
    assert any(m.startswith("hemoe_sk.inspection.") for m in GRAPH["hemoe_sk.inspection"])


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in GRAPH if layer_of(m) is None)
    assert not unplaced, (
        f"{unplaced}: place these modules in tests/test_architecture.py's LAYERS"
    )


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_one_above_it():
    upward = sorted(
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in GRAPH.items() for d in deps
        if layer_of(m) is not None and layer_of(d) is not None
        and layer_of(d) > layer_of(m)
    )
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_module_imports_the_package_itself():
    """``from hemoe_sk import X`` inside the package runs the whole public
    ``__init__`` and hides a cycle behind it."""
    assert not sorted(m for m, deps in GRAPH.items() if "hemoe_sk" in deps)


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"b"}}, None),
    ],
)
def test_cycle_finder(graph, expected):
    assert find_cycle(graph) == expected


def test_inspection_modules_are_small():
    """The inspection package is split by role, each module under ~600
    lines (issue 21)."""
    sizes = {
        m: len(path.read_text().splitlines())
        for m, path in module_files().items() if m.startswith("hemoe_sk.inspection")
    }
    assert len(sizes) >= 5
    assert max(sizes.values()) < 600, sizes


def test_version_is_defined_once():
    """pyproject.toml reads the version from ``hemoe_sk.__version__``
    instead of repeating it."""
    tomllib = pytest.importorskip("tomllib")
    import hemoe_sk

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "hemoe_sk.__version__"
    }
    assert hemoe_sk.__version__.count(".") == 2
