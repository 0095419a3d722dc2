"""The house rules of README.md's Architecture section, checked on the source: the layers import downward
only, nothing imports in a circle, the nanny ships alone, and the IDE bridge uses the engine only.

Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import is still a
dependency, and a circle through one is still a circle (it only fails later, at run time)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jupyter_cake", "ide_bridge")

# Top to bottom; a module belongs to the layer of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("front doors", ("jupyter_cake", "jupyter_cake.magics", "jupyter_cake.cli", "jupyter_cake.runner",
                     "jupyter_cake.server", "jupyter_cake.views", "jupyter_cake.widget", "ide_bridge")),
    ("add-ons", ("jupyter_cake.ray.addon", "jupyter_cake.ray.session", "jupyter_cake.ray.jobs",
                 "jupyter_cake.ray.slurm")),
    ("engine", ("jupyter_cake.manager", "jupyter_cake.session", "jupyter_cake.relay", "jupyter_cake.store",
                "jupyter_cake.engine")),
    ("backends", ("jupyter_cake.backends", "jupyter_cake.addons", "jupyter_cake.ssh")),
    ("targets", ("jupyter_cake.targets", "jupyter_cake.workdir")),
    ("node", ("jupyter_cake.nanny", "jupyter_cake.ray")),
)  # fmt: skip
# Leaf helpers every layer may use (they import nothing of Cake).
SHARED = ("jupyter_cake.errors", "jupyter_cake.procs", "jupyter_cake.entrypoints")
# What the IDE bridge may use: the engine, its vocabulary (targets) and the CLI's progress printer.
IDE_BRIDGE_MAY_USE = ("ide_bridge", "jupyter_cake.manager", "jupyter_cake.session", "jupyter_cake.relay",
                      "jupyter_cake.store", "jupyter_cake.engine", "jupyter_cake.targets", "jupyter_cake.runner",
                      *SHARED)  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[str]:
    """The project modules ``module`` imports (``from pkg import sub`` counts as sub, not pkg)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module or ""
            subs = [f"{base}.{alias.name}" for alias in node.names]
            names = [s for s in subs if s in MODULES] or [base]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import a.b.c` of a function's module: its module
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


GRAPH = {module: sorted(set(_imports(module, path))) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    best, level = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    assert level >= 0, f"{module} is in no layer of tests/test_layers.py (nor README's Architecture section)"
    return level


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_circles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert circles == []


def test_layers_import_downward_only() -> None:
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})"
        for module, deps in GRAPH.items() if not _within(module, SHARED)
        for dep in deps if not _within(dep, SHARED) and _layer(dep) < _layer(module)
    ]  # fmt: skip
    assert upward == []


def test_shared_helpers_import_nothing_of_cake() -> None:
    assert {m: GRAPH[m] for m in MODULES if _within(m, SHARED) and GRAPH[m]} == {}


def test_the_nanny_ships_alone_and_knows_no_add_on() -> None:
    """The nanny runs where only its own folder is installed: it imports nothing else of Cake (an
    add-on's service reaches it by module name, through --service)."""
    outside = {m: [d for d in GRAPH[m] if not _within(d, ("jupyter_cake.nanny",))]
               for m in MODULES if _within(m, ("jupyter_cake.nanny",))}  # fmt: skip
    assert {m: deps for m, deps in outside.items() if deps} == {}


def test_backends_and_engine_know_no_add_on_by_name() -> None:
    below = ("jupyter_cake.backends", "jupyter_cake.manager", "jupyter_cake.session", "jupyter_cake.addons")
    knowing = {m: [d for d in GRAPH[m] if _within(d, ("jupyter_cake.ray",))] for m in MODULES if _within(m, below)}
    assert {m: deps for m, deps in knowing.items() if deps} == {}


def test_ide_bridge_uses_the_engine_only() -> None:
    assert any(_within(m, ("ide_bridge",)) for m in MODULES), "ide_bridge/ is a top-level package"
    beyond = {m: [d for d in GRAPH[m] if not _within(d, IDE_BRIDGE_MAY_USE)] for m in MODULES if _within(m, ("ide_bridge",))}
    assert {m: deps for m, deps in beyond.items() if deps} == {}
    users = [m for m, deps in GRAPH.items() if not _within(m, ("ide_bridge",)) and any(_within(d, ("ide_bridge",)) for d in deps)]
    # `cake kernel ...` (one front door calling another), and the path kernelspecs of earlier versions run
    assert sorted(users) == ["jupyter_cake.cli", "jupyter_cake.ide_bridge.kernel"]
