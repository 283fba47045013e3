"""The import graph of app/ and worker/: no circles, and the layers import only downwards.

The graph is read from the source (AST), not from a running interpreter: every `import` and
`from ... import` statement, at module level or inside a function, except those under
`if TYPE_CHECKING:`. An import inside a function still runs, and one that only avoids a circle
hides it, so it counts like any other. Relative imports are resolved against the importing
package, `from package import name` points at the submodule when `name` is one, and importing
a submodule also runs its parent packages' `__init__`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_PACKAGES = ("app", "worker")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for top in TOP_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join(parts)
            found[name] = Module(name, path, is_package)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_statements(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    statements: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                statements.append(child)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                pending.extend(child.orelse)
            else:
                pending.append(child)
    return statements


def _nearest_module(name: str, modules: dict[str, Module]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(
    module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]
) -> set[str]:
    """The app/worker modules `node` runs, parent packages included."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module.name if module.is_package else module.name.rpartition(".")[0]
            parts = package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        named = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names
        ]
    targets: set[str] = set()
    for name in named:
        target = _nearest_module(name, modules)
        while target:
            # A module's own packages are already running when it is imported.
            if not f"{module.name}.".startswith(f"{target}."):
                targets.add(target)
            target = _nearest_module(target.rpartition(".")[0], modules)
    targets.discard(module.name)
    return targets


def import_graph() -> dict[str, set[str]]:
    """Each app/worker module mapped to the app/worker modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        graph[module.name] = set()
        for node in _import_statements(tree):
            graph[module.name] |= _targets(module, node, modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(groups)


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    came_from: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            path: list[str] = []
            step: str | None = node
            while step is not None:
                path.append(step)
                step = came_from[step]
            return path[::-1]
        for successor in sorted(graph[node]):
            if successor not in came_from:
                came_from[successor] = node
                queue.append(successor)
    return None


def test_the_graph_sees_the_known_edges() -> None:
    graph = import_graph()
    # Absolute, `from package import submodule`, and the parent package a submodule runs.
    assert "app.celery_app" in graph["app.jobs.messages"]
    assert "app.jobs.state" in graph["app.jobs.service"]
    assert "app.bfl" in graph["app.settings"]
    # An import inside a function counts: the CLI builds the Celery app only when it runs.
    assert "app.celery_app" in graph["app.cli"]
    assert "app.celery_app" in graph["worker.celery_app"]


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_among_app_and_worker() -> None:
    graph = import_graph()
    found = cycles(graph)
    described = []
    for group in found:
        members = set(group)
        inner = {name: graph[name] & members for name in group}
        back = next(t for t in sorted(inner[group[0]]) if _path(inner, t, group[0]))
        loop = [group[0], *(_path(inner, back, group[0]) or [])]
        described.append(" -> ".join(loop) + f"  (group: {', '.join(group)})")
    assert not found, "import cycles:\n" + "\n".join(described)


def test_app_never_imports_worker() -> None:
    """worker/ is wiring (task bodies, the `celery -A worker.celery_app` entry point); the
    Celery app object itself lives in app/celery_app.py, so app/ has no reason to go up."""
    graph = import_graph()
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.startswith("app")
        for target in targets
        if target == "worker" or target.startswith("worker.")
    )
    assert not offenders, "app/ modules importing worker/:\n" + "\n".join(offenders)


def test_pages_never_import_a_json_api_module() -> None:
    """Pages (routes.py, *_page.py) share code with the JSON API through services and
    schemas, never by importing an api.py."""
    modules = _modules()
    graph = import_graph()
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.rpartition(".")[2] == "routes" or name.endswith("_page")
        for target in targets
        if target.rpartition(".")[2] == "api" and not modules[target].is_package
    )
    assert not offenders, "pages importing a JSON API module:\n" + "\n".join(offenders)


def test_services_never_reach_the_templates() -> None:
    """A service decides; pages render. No service imports app.templating, directly or
    through the modules it imports."""
    graph = import_graph()
    offenders = []
    for name in sorted(graph):
        if name.rpartition(".")[2] == "service":
            path = _path(graph, name, "app.templating")
            if path is not None:
                offenders.append(" -> ".join(path))
    assert not offenders, "services reaching the templates:\n" + "\n".join(offenders)


def test_jobs_never_import_the_gallery() -> None:
    """The Job has one home, app/jobs: the gallery browses jobs and reads them through
    app.jobs.queries (and its commands through app.jobs.service); jobs never look back."""
    graph = import_graph()
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name == "app.jobs" or name.startswith("app.jobs.")
        for target in targets
        if target == "app.gallery" or target.startswith("app.gallery.")
    )
    assert offenders == []
    assert "app.jobs.queries" in graph["app.gallery.routes"]


def test_only_jobs_write_job_columns() -> None:
    """No module of another feature writes the jobs table: no `update(Job)` outside app/jobs."""
    offenders = []
    for module in _modules().values():
        if not module.name.startswith("app.") or module.name.startswith("app.jobs"):
            continue
        if "update(Job)" in module.path.read_text():
            offenders.append(module.name)
    assert offenders == []
