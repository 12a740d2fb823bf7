"""The package's imports point one way: no import cycles, and nothing outside `cli` imports the CLI.

Every module of `transformers_legrad` is read with `ast` (no import is run), and every import counts: those at the
top, inside functions, and under `if TYPE_CHECKING:`. A function-level import only hides a cycle from Python, not
from a reader. Two graphs are checked:

- modules: `from . import x` where x is a submodule is an import of that submodule; `from .m import name` and
  `import pkg` are imports of `m` and of `pkg/__init__`;
- parts: each top-level module or subpackage (`cli`, `evaluation`, `datasets_io`, `demo`, ...) is one node, so
  `evaluation.benchmark -> demo -> evaluation.synthetic` is a cycle between two parts even though no module
  imports itself back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import transformers_legrad

PACKAGE = "transformers_legrad"
ROOT = Path(transformers_legrad.__file__).resolve().parent


def package_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """{module name: (file, is a package)} for every .py file under `root`."""
    modules = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (file, is_package)
    return modules


def _imported_names(tree: ast.AST, module: str, is_package: bool, modules) -> set[str]:
    """The (not yet resolved) names of everything `module` imports, anywhere in its source."""
    here = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the package's modules it imports}; an import of a package is one of its `__init__`."""
    modules = package_modules(root)
    package = root.name
    graph = {}
    for module, (file, is_package) in modules.items():
        targets = set()
        for name in _imported_names(ast.parse(file.read_text(), str(file)), module, is_package, modules):
            if name != package and not name.startswith(package + "."):
                continue
            while name not in modules:  # `import pkg.module.attribute`-style names: the module that holds it
                name = name.rpartition(".")[0]
            if name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def part_of(module: str, package: str = PACKAGE) -> str:
    """The top-level module or subpackage a module belongs to: `pkg.evaluation.data` -> `pkg.evaluation`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == package else module


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with each part (see `part_of`) as one node; the package's own `__init__` stays apart."""
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = part_of(module)
        parts.setdefault(source, set()).update(part_of(target) for target in targets if part_of(target) != source)
    return parts


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of `graph`, each a path that ends where it starts: the shortest through each node of a cycle.

    Nodes on a cycle are the strongly connected components with more than one node (Tarjan's algorithm); a cycle
    found again from another of its nodes is listed once.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found: dict[tuple[str, ...], list[str]] = {}
    for component in components:
        for node in component:
            cycle = _cycle_through(node, set(component), graph)
            first = cycle.index(min(cycle[:-1]))
            found.setdefault(tuple(cycle[first:-1] + cycle[:first]), cycle)
    return list(found.values())


def _cycle_through(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from `start` back to itself through `members` (breadth-first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")  # pragma: no cover


def _describe(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(name.removeprefix(PACKAGE + ".") for name in cycle) for cycle in found)


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, f"import cycles between modules:\n{_describe(found)}"


def test_no_import_cycle_between_parts():
    found = cycles(part_graph(import_graph()))
    assert not found, f"import cycles between parts of the package:\n{_describe(found)}"


def test_only_the_cli_imports_the_cli():
    cli = f"{PACKAGE}.cli"
    importers = sorted(
        module
        for module, targets in import_graph().items()
        if part_of(module) != cli and any(part_of(target) == cli for target in targets)
    )
    assert not importers, f"library modules that import the CLI: {', '.join(importers)}"


def test_the_walk_sees_hidden_and_relative_imports(tmp_path):
    """The graph builder itself: function-level, TYPE_CHECKING and relative imports, submodules and packages."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import thing\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import other\nthing = 1\n",
        "b.py": "def f():\n    from .sub import c\n    import transformers_legrad.sub.c.attribute\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\nfrom . import d\nimport os\n",
        "sub/d.py": "from transformers_legrad import sub\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph == {
        PACKAGE: {f"{PACKAGE}.a"},
        f"{PACKAGE}.a": {f"{PACKAGE}.b"},
        f"{PACKAGE}.b": {f"{PACKAGE}.sub.c"},
        f"{PACKAGE}.sub": set(),
        f"{PACKAGE}.sub.c": {f"{PACKAGE}.a", f"{PACKAGE}.sub.d"},
        f"{PACKAGE}.sub.d": {f"{PACKAGE}.sub"},
    }
    assert cycles(graph) == [[f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.sub.c", f"{PACKAGE}.a"]]
    parts = part_graph(graph)
    assert parts[f"{PACKAGE}.sub"] == {f"{PACKAGE}.a"}
    assert cycles(parts) == [[f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.sub", f"{PACKAGE}.a"]]
