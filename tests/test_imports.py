"""The package's layers, read from its source: who may import whom (docs/architecture.md).

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clarky_provider"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from a import b`` counts ``a.b`` if it is one)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected component larger than a module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_list_reads_do_not_know_the_hook():
    graph = import_graph()
    for reader in ("clarky_provider.hooks.pages", "clarky_provider.hooks.listing"):
        assert "clarky_provider.hooks.clarky" not in graph[reader], reader


def test_sql_knows_tables_not_the_api():
    graph = import_graph()
    offenders = {
        module: sorted(
            t for t in targets if t == "clarky_provider.resources" or t.startswith("clarky_provider.hooks")
        )
        for module, targets in graph.items()
        if module.startswith("clarky_provider.sql")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_hooks_know_no_operator_and_no_warehouse():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("clarky_provider.hooks"):
            assert not {
                t for t in targets if t.startswith(("clarky_provider.operators", "clarky_provider.sql"))
            }, module


def test_triggers_know_no_operator_and_no_warehouse():
    """A trigger runs in the triggerer's event loop: it counts through the hook layer, nothing
    heavier (no operator, no warehouse module)."""
    graph = import_graph()
    triggers = [m for m in graph if m.startswith("clarky_provider.triggers.")]
    assert "clarky_provider.triggers.change" in triggers
    for module in triggers:
        assert not {
            t for t in graph[module] if t.startswith(("clarky_provider.operators", "clarky_provider.sql"))
        }, module
