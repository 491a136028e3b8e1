"""The import rules of postroom's layers, checked over the source with `ast` (run by `make lint`).

Layers, lowest first: `database` (tables and queries), `services` (what postroom does),
`worker` (Celery tasks and the execution engine) and `api` (HTTP and the CLI). Rules:

- `database` imports none of `services`, `api`, `worker`.
- `services` imports nothing of `api` (and nothing of `worker`: a service runs the same in
  the API, a task or a script).
- `api` imports of `worker` only the side-effect-free modules in API_MAY_IMPORT: importing
  `worker.app` builds the Celery app and connects the worker's signal receivers, which have
  no business inside the API process.
- No import cycle among project modules.
- engine19-tasks-import-no-repositories: a Celery task module (`worker.tasks.*`) imports no
  `database.repositories` module: a task parses its arguments and calls a service.
- engine19-lifecycle-writes-only-here: nothing but the lifecycle repository
  (LIFECYCLE_MODULE) writes an event's `status`, `history` or `steps`: no UPDATE of the event
  table (SQLAlchemy's update() on `Event.__table__` or `Event`, or an `UPDATE event SET` in
  SQL text) sets those columns, and no code assigns them on an event object.

Which imports count: every import, at module level, inside a function or under
`TYPE_CHECKING`, for the layer rules and for cycles alike.
- A deferred import still runs in the importing process (importing `worker.app` from inside
  a function still connects the worker's signal receivers), so it breaks a layer the same way.
- A type-only import is still a dependency: two modules that name each other's types cannot
  be read, tested or moved apart, and a function-level import that dodges a cycle at import
  time hides the cycle rather than removing it. A cycle is broken by moving the shared
  piece (a type, a Protocol, a constant) into a module both can import.

Rules name top-level packages and a few module names only, never file paths, so the check
holds when modules move into sub-packages. Usage: `python scripts/check_imports.py [ROOT]`;
exit status 1 and one line per violation when a rule is broken.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

PACKAGES = ("database", "services", "worker", "api")
# (importer's top-level package, imported top-level package): forbidden.
FORBIDDEN = {
    ("database", "services"),
    ("database", "api"),
    ("database", "worker"),
    ("services", "api"),
    ("services", "worker"),
    ("worker", "api"),
}
# What of `worker` the API may import (and their sub-modules).
API_MAY_IMPORT = ("worker.dispatch", "worker.config")
# engine19-tasks-import-no-repositories: these modules import no REPOSITORIES module.
TASK_MODULES = "worker.tasks"
REPOSITORIES = "database.repositories"
# engine19-lifecycle-writes-only-here: the one writer of these event columns.
LIFECYCLE_MODULE = "database.repositories.events.lifecycle"
LIFECYCLE_COLUMNS = frozenset({"status", "history", "steps"})
_SQL_UPDATE = re.compile(
    r"\bUPDATE\s+event\s+SET\b(?P<set>.*?)(?:\bWHERE\b|\bRETURNING\b|$)", re.I | re.S
)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    kind: str  # "module" | "deferred" | "typing"
    path: Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import node under `node`, with how it runs (module level, deferred, typing)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, kind
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, "deferred" if kind == "module" else kind)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), "typing")
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), kind)
        else:
            yield from _walk(child, kind)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node, kind in _walk(tree, "module"):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            # `from services import jobs` depends on services.events.jobs, not on services/__init__.
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets = subs or [base]
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                out.append(Import(name, target, node.lineno, kind, path))
    return out


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        src, dst = imp.importer.split(".")[0], imp.target.split(".")[0]
        allowed = src == "api" and dst == "worker" and _within(imp.target, API_MAY_IMPORT)
        if src == "api" and dst == "worker" and not allowed:
            problems.append(_say(imp, f"api may import of worker only {', '.join(API_MAY_IMPORT)}"))
        elif (src, dst) in FORBIDDEN:
            problems.append(_say(imp, f"{src} must not import {dst}"))
    return problems


def task_violations(imports: list[Import]) -> list[str]:
    """engine19-tasks-import-no-repositories."""
    return [
        _say(imp, "engine19-tasks-import-no-repositories: a task calls a service, not SQL")
        for imp in imports
        if _within(imp.importer, (TASK_MODULES,)) and _within(imp.target, (REPOSITORIES,))
    ]


def _event_tables(tree: ast.AST) -> set[str]:
    """Names that stand for the event table in a module: `Event`, and `_t = Event.__table__`."""
    names = {"Event"}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "__table__"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "Event"
        ):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _updates_event(call: ast.AST, tables: set[str]) -> bool:
    """`.values(...)` called on a chain that starts with update(<event table>)."""
    node = call
    while isinstance(node, (ast.Call, ast.Attribute)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "update" and node.args:
                first = node.args[0]
                return isinstance(first, ast.Name) and first.id in tables
            node = func
        else:
            node = node.value
    return False


def lifecycle_violations(name: str, path: Path, shown: Path) -> list[str]:
    """engine19-lifecycle-writes-only-here, for one module."""
    if name == LIFECYCLE_MODULE:
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tables = _event_tables(tree)
    rule = "engine19-lifecycle-writes-only-here"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "values"
            and _updates_event(node.func.value, tables)
        ):
            for kw in node.keywords:
                if kw.arg in LIFECYCLE_COLUMNS:
                    found.append((node.lineno, f"an UPDATE of the event table sets {kw.arg}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in _SQL_UPDATE.finditer(node.value):
                hit = {c for c in LIFECYCLE_COLUMNS if re.search(rf"\b{c}\s*=", m["set"])}
                if hit:
                    found.append((node.lineno, f"SQL text updates event {', '.join(sorted(hit))}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if (
                        isinstance(t, ast.Attribute)
                        and t.attr in LIFECYCLE_COLUMNS
                        and isinstance(t.value, ast.Name)
                        and "event" in t.value.id.lower()
                    ):
                        found.append((node.lineno, f"assigns {t.value.id}.{t.attr}"))
    return [
        f"{shown}:{line}: {name}: {what}: {rule} (only {LIFECYCLE_MODULE} writes them)"
        for line, what in found
    ]


def _within(target: str, allowed: tuple[str, ...]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def _say(imp: Import, rule: str) -> str:
    how = "" if imp.kind == "module" else f" ({imp.kind})"
    return f"{imp.path}:{imp.line}: {imp.importer} imports {imp.target}{how}: {rule}"


def cycles(imports: list[Import], known: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports:
        target = _resolve(imp.target, known)
        if target is not None and target != imp.importer:
            graph[imp.importer].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    """The project module an import names (`a.b.C` -> `a.b` when C is not a module)."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in known:
            return name
        parts.pop()
    return None


def check(root: Path) -> list[str]:
    known = project_modules(root)
    imports = [
        replace(imp, path=imp.path.relative_to(root))
        for name, path in known.items()
        for imp in imports_of(name, path, known)
    ]
    problems = layer_violations(imports) + task_violations(imports)
    for name, path in known.items():
        problems += lifecycle_violations(name, path, path.relative_to(root))
    for component in cycles(imports, known):
        problems.append(f"import cycle: {' <-> '.join(component)}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    problems = check(root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
