#!/usr/bin/env python3
"""The ``gateway`` package's import graph, at package level (stdlib only, ``ast``-based).

Prints every edge between the top-level parts of ``gateway`` (subpackages such as
``gateway.proxy``, and top-level modules such as ``gateway.settings``), the cycles between them
(strongly connected components of more than one part) and the largest modules by line count.
Every import counts, including those inside functions and under ``if TYPE_CHECKING:``: a lazy
import still couples the two packages.

    python scripts/import_graph.py [ROOT]      # ROOT: the repository (default: this script's)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "gateway"
REPO = Path(__file__).resolve().parent.parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Absolute dotted names of everything ``module`` imports (relative imports resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module or ""
            yield name
            # ``from gateway import metrics`` imports the module gateway.metrics
            for alias in node.names:
                yield f"{name}.{alias.name}"


def part_of(module: str) -> str | None:
    """The top-level part of ``gateway`` a dotted name belongs to (``gateway.proxy.handler`` →
    ``proxy``); None outside ``gateway`` or for the package itself."""
    pieces = module.split(".")
    if pieces[0] != PACKAGE or len(pieces) < 2:
        return None
    return pieces[1]


def modules(root: Path = REPO) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def edges(root: Path = REPO) -> dict[str, set[str]]:
    """Part → the other parts it imports from."""
    mods = modules(root)
    parts = {part_of(m) for m in mods} - {None}
    graph: dict[str, set[str]] = {p: set() for p in parts if p is not None}
    for name, path in mods.items():
        source = part_of(name)
        if source is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target in _imported(tree, name, path.name == "__init__.py"):
            dest = part_of(target)
            if dest is not None and dest != source and dest in graph:
                graph[source].add(dest)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def largest(root: Path = REPO, count: int = 10) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(root)))
             for p in modules(root).values()]
    return sorted(sizes, key=lambda s: (-s[0], s[1]))[:count]


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else REPO
    graph = edges(root)
    print(f"package-level imports inside {PACKAGE}/ (part -> parts it imports):")
    width = max(map(len, graph), default=0)
    for part in sorted(graph):
        print(f"  {part:<{width}} -> {', '.join(sorted(graph[part])) or '-'}")
    found = cycles(graph)
    print("cycles between packages:" + ("" if found else " none"))
    for component in found:
        print("  " + " <-> ".join(component))
    print("largest modules (lines):")
    for lines, path in largest(root):
        print(f"  {lines:>5}  {path}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
