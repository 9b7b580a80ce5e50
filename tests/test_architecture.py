"""The package's shape, checked from its source: the layers of docs/architecture.md, written here once.

A module may import its own package (unit) and the units of lower layers, never a unit of its own layer
or above. No import cycle, also not through function-local imports; a function-local import of the
package's own modules is allowed only to defer an optional dependency or a start-up cost, and says so in
a ``# deferred:`` comment.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Units (a top-level module, or a package with everything in it), bottom layer first.
LAYERS = [
    ["alexnet._version", "alexnet.errors", "alexnet.files"],                          # foundations
    ["alexnet.cliargs", "alexnet.runtime", "alexnet.provenance", "alexnet.optim", "alexnet.checkpoint",
     "alexnet.kernels", "alexnet.viz", "alexnet.timing"],                             # services
    ["alexnet.distributed", "alexnet.models", "alexnet.data"],                        # the network, the data
    ["alexnet.evaluation"],                                                           # the evaluation loop
    ["alexnet.training", "alexnet.inference"],                                        # training; using models
    ["alexnet.web", "alexnet.bench", "alexnet.experiments"],                          # applications
    ["alexnet.cli", "alexnet"],                                                       # the command, the API
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
ALIASES = {"alexnet.__main__": "alexnet.cli"}  # `python -m alexnet` is the command


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "alexnet").rglob("*.py")}


def unit_of(module: str) -> str:
    """The longest unit name that is ``module`` or a package holding it."""
    if module in ALIASES:
        return ALIASES[module]
    return max((u for u in LAYER if module == u or module.startswith(u + ".")), key=len)


def imports(module: str) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, source line) for each import of the package's own
    modules; ``from . import x`` names the submodule ``x`` when there is one, else the package."""
    path = MODULES[module]
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "alexnet"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "alexnet":
                target = node.module
            else:
                continue
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                       for a in node.names]
        for t in targets:
            while t not in MODULES:  # alexnet.x.y where y is a name in module alexnet.x
                t = t.rsplit(".", 1)[0]
            context = " ".join(lines[max(0, node.lineno - 5):node.lineno])
            found.append((t, node.lineno, id(node) in local, context))
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert all(unit_of(m) for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_reaches_up_or_sideways(module):
    """Own unit, or a lower layer: nothing else."""
    mine = unit_of(module)
    wrong = [f"line {line}: {t} (layer {LAYER[unit_of(t)]}) from layer {LAYER[mine]}"
             for t, line, _, _ in GRAPH[module]
             if unit_of(t) != mine and LAYER[unit_of(t)] >= LAYER[mine]]
    assert not wrong, f"{module} imports upwards or sideways: {wrong}"


def test_no_import_cycles():
    """Depth-first search over every import, function-local ones included."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t, *_ in GRAPH[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_function_local_imports_say_why():
    """Only to defer an optional dependency or a start-up cost, with a '# deferred:' comment."""
    silent = [f"{m} line {line}: {t}" for m, found in GRAPH.items() for t, line, local, context in found
              if local and "# deferred:" not in context]
    assert not silent, silent


def test_the_layers_are_at_most_seven_and_the_applications_independent():
    assert len(LAYERS) <= 7
    apps = LAYERS[-2]
    crossing = [(m, t) for m, found in GRAPH.items() for t, *_ in found
                if unit_of(m) in apps and unit_of(t) in apps and unit_of(t) != unit_of(m)]
    assert not crossing, crossing
