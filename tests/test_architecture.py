"""The layout of ARCHITECTURE.md, checked: no import cycles between modules, the domain
imports no database, web or UI library (not even through another module), and each layer
imports only the layers below it.

Imports are read from the source (also those inside functions), not by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("triage", "models", "api", "review_ui")

DOMAIN = {f"triage.{name}" for name in (
    "agreement", "catalogue", "clock", "connectors", "errors", "lexicons", "policy", "prediction", "rules", "settings",
    "surveillance", "taxonomy", "text", "triager",
)}
INFRASTRUCTURE_LIBRARIES = (
    "sqlalchemy", "alembic", "psycopg", "fastapi", "starlette", "uvicorn", "gradio", "httpx", "prometheus_client",
)
ADAPTERS = ("api", "review_ui", "triage.cli")
# Layer -> the project modules it must never import (directly or inside a function).
FORBIDDEN = {
    "domain": ("triage.store", "triage.contexts", "triage.jobs", "triage.service", "models.learning", *ADAPTERS),
    "triage.store": ("triage.contexts", "triage.jobs", "triage.service", "models", *ADAPTERS),
    "triage.contexts": ("triage.jobs", "triage.service", *ADAPTERS),
    "triage.jobs": ("triage.service", "models", *ADAPTERS),
    "triage.service": ("triage.jobs", "models", *ADAPTERS),
    "models": ("triage.store", "triage.contexts", "triage.service", "triage.jobs.sla_monitor",
               "triage.jobs.webhooks", *ADAPTERS),
    "review_ui": ("api", "triage.cli", "triage.store"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    return {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(project modules, top-level names of other libraries) that ``path`` imports anywhere."""
    project, libraries = set(), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from a import b`` imports the module a.b when there is one, else names of a.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known:
                project.add(target)
            elif target.split(".")[0] in PACKAGES:
                owner = target
                while owner and owner not in known:
                    owner = owner.rpartition(".")[0]
                if owner:
                    project.add(owner)
            elif target.split(".")[0] != "__future__":
                libraries.add(target.split(".")[0])
    project.discard(name)
    return project, libraries


def import_graph(root: Path = ROOT, packages=PACKAGES):
    modules = find_modules(root, packages)
    known = set(modules)
    graph, libraries = {}, {}
    for name, path in modules.items():
        graph[name], libraries[name] = imports_of(name, path, known)
    return graph, libraries


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def layer_of(module: str) -> str | None:
    if module in DOMAIN:
        return "domain"
    for layer in sorted(FORBIDDEN, key=len, reverse=True):
        if layer != "domain" and (module == layer or module.startswith(layer + ".")):
            return layer
    return None


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        for target in sorted(targets):
            if layer and any(within(target, banned) for banned in FORBIDDEN[layer]):
                out.append(f"{module} ({layer}) imports {target}")
    return out


def library_violations(graph, libraries) -> list[str]:
    out = []
    for module in sorted(DOMAIN & set(graph)):
        for dependency in sorted(reachable(graph, module)):
            for library in sorted(set(libraries[dependency]) & set(INFRASTRUCTURE_LIBRARIES)):
                via = "" if dependency == module else f" through {dependency}"
                out.append(f"domain module {module} imports {library}{via}")
    return out


GRAPH, LIBRARIES = import_graph()


def test_the_graph_sees_the_project():
    assert {"triage.service", "triage.contexts.cases", "triage.store.tables", "triage.cli.common", "api.routes",
            "models.training"} <= set(GRAPH)
    assert DOMAIN <= set(GRAPH), DOMAIN - set(GRAPH)
    assert "triage.contexts.audit" in GRAPH["triage.contexts.cases"]
    assert "sqlalchemy" in LIBRARIES["triage.store.database"]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_domain_imports_no_database_web_or_ui_library():
    assert library_violations(GRAPH, LIBRARIES) == []


def test_layers_import_only_downwards():
    assert layer_violations(GRAPH) == []


# ----------------------------------------------------------------------------- the checks fail


@pytest.fixture
def broken_project(tmp_path):
    """A small tree with one cycle, a domain module reaching SQLAlchemy through another
    module, and a context importing a job."""
    files = {
        "triage/__init__.py": "",
        "triage/text.py": "from triage import rules\n",
        "triage/rules.py": "def f():\n    from triage.store import tables\n",
        "triage/store/__init__.py": "",
        "triage/store/tables.py": "import sqlalchemy\n",
        "triage/contexts/__init__.py": "",
        "triage/contexts/cases.py": "from triage.contexts.labels import x\nfrom .. jobs import runner\n",
        "triage/contexts/labels.py": "from triage.contexts import cases\nx = 1\n",
        "triage/jobs/__init__.py": "",
        "triage/jobs/runner.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_catch_a_cycle_a_domain_library_and_an_upward_import(broken_project):
    graph, libraries = import_graph(broken_project, ("triage",))
    assert cycles(graph) == [["triage.contexts.cases", "triage.contexts.labels"]]
    assert "domain module triage.text imports sqlalchemy through triage.store.tables" in library_violations(graph, libraries)
    violations = layer_violations(graph)
    assert "triage.contexts.cases (triage.contexts) imports triage.jobs.runner" in violations
    assert "triage.rules (domain) imports triage.store.tables" in violations
