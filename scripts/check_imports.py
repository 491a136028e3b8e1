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
- Module rules (MODULE_RULES): modules under a prefix import nothing under another; tasks
  (`worker.tasks`) import no repositories (`database.repositories`), they call a service.
- Lifecycle writes (LIFECYCLE_WRITERS): only the lifecycle repository writes an event's
  `status`, `history` or `steps`: an assignment `<...event...>.status = ...`, or a
  `.values(status=...)` in a module that imports `Event`, anywhere else is reported.

The last two are issue 19's rules. Today's code breaks both (the engine refactor is moving it),
so both are written, tested, and disabled (ENFORCE_MODULE_RULES, ENFORCE_LIFECYCLE_WRITERS);
`python scripts/check_imports.py --pending` lists what they would report.

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
# (importer module prefix, imported module prefix): forbidden, by module name.
MODULE_RULES: tuple[tuple[str, str, str], ...] = (
    ("worker.tasks", "database.repositories", "tasks call services, not repositories"),
)
# TODO(issue 19): enable once the tasks are thin (today worker.tasks.classify, .mail and .send
# import repositories).
ENFORCE_MODULE_RULES = False
# The modules that may write an event's lifecycle columns, and those columns.
LIFECYCLE_WRITERS: tuple[str, ...] = ("database.repositories.events.lifecycle",)
LIFECYCLE_FIELDS = ("status", "history", "steps")
# TODO(issue 19): enable once the lifecycle repository is the one writer (today the batch,
# coalesce, inline-chain, cancel and rows modules each write some of them).
ENFORCE_LIFECYCLE_WRITERS = False


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


def module_rule_violations(
    imports: list[Import], rules: tuple[tuple[str, str, str], ...]
) -> list[str]:
    problems = []
    for imp in imports:
        for importer, target, why in rules:
            if _within(imp.importer, (importer,)) and _within(imp.target, (target,)):
                problems.append(_say(imp, f"{importer} must not import {target}: {why}"))
    return problems


def _raw_update(fields: tuple[str, ...]) -> re.Pattern[str]:
    """Raw SQL that sets one of `fields` of the event table."""
    names = "|".join(fields)
    return re.compile(rf"\bUPDATE\s+event\b.*?\bSET\b.*?\b({names})\s*=", re.I | re.S)


def _imports_event(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("database.models")
        and any(a.name == "Event" for a in node.names)
        for node in ast.walk(tree)
    )


def lifecycle_writes(
    root: Path,
    known: dict[str, Path],
    writers: tuple[str, ...],
    fields: tuple[str, ...] = LIFECYCLE_FIELDS,
) -> list[str]:
    """Writes of an event's lifecycle columns outside `writers`: `<x>.status = ...` where the
    receiver names an event, `.values(status=...)` in a module that imports Event, or raw
    SQL `UPDATE event SET status = ...`. A heuristic: it names what it found, by line."""
    problems = []
    for name, path in sorted(known.items()):
        if _within(name, writers):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root)
        sql = _imports_event(tree)
        raw = _raw_update(fields)
        for node in ast.walk(tree):
            found = (
                raw.search(node.value)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                else None
            )
            if found:
                problems.append(
                    f"{rel}:{node.lineno}: {name} writes event {found.group(1)} (SQL): "
                    f"only {', '.join(writers)} may"
                )
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in fields
                    and "event" in ast.unparse(target.value).lower()
                ):
                    problems.append(
                        f"{rel}:{node.lineno}: {name} writes {ast.unparse(target)}: "
                        f"only {', '.join(writers)} may"
                    )
            if (
                sql
                and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "values"
            ):
                for kw in node.keywords:
                    if kw.arg in fields:
                        problems.append(
                            f"{rel}:{node.lineno}: {name} writes event {kw.arg} (.values): "
                            f"only {', '.join(writers)} may"
                        )
    return problems


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


def check(
    root: Path,
    *,
    module_rules: tuple[tuple[str, str, str], ...] | None = None,
    lifecycle_writers: tuple[str, ...] | None = None,
) -> list[str]:
    """Every violation; `module_rules` / `lifecycle_writers` default to the enforced ones
    (none while ENFORCE_... is off), a test or `--pending` passes them explicitly."""
    if module_rules is None:
        module_rules = MODULE_RULES if ENFORCE_MODULE_RULES else ()
    if lifecycle_writers is None and ENFORCE_LIFECYCLE_WRITERS:
        lifecycle_writers = LIFECYCLE_WRITERS
    known = project_modules(root)
    imports = [
        replace(imp, path=imp.path.relative_to(root))
        for name, path in known.items()
        for imp in imports_of(name, path, known)
    ]
    problems = layer_violations(imports)
    problems += module_rule_violations(imports, module_rules)
    if lifecycle_writers is not None:
        problems += lifecycle_writes(root, known, lifecycle_writers)
    for component in cycles(imports, known):
        problems.append(f"import cycle: {' <-> '.join(component)}")
    return problems


def pending(root: Path) -> list[str]:
    """What the disabled rules would report today (issue 19's work list)."""
    known = project_modules(root)
    imports = [
        replace(imp, path=imp.path.relative_to(root))
        for name, path in known.items()
        for imp in imports_of(name, path, known)
    ]
    return module_rule_violations(imports, MODULE_RULES) + lifecycle_writes(
        root, known, LIFECYCLE_WRITERS
    )


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--pending"]
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    if "--pending" in argv:
        for line in pending(root):
            print(line)
        return 0
    problems = check(root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
