"""The layers' import rules (scripts/check_imports.py): the tree keeps them, and the check
catches each kind of violation when one is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.check_imports import check

ROOT = Path(__file__).resolve().parent.parent


def tree(root: Path, files: dict[str, str]) -> Path:
    """A synthetic project: every package gets its __init__, every file its text."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


CLEAN = {
    "database/models.py": "import enum\n",
    "database/engine.py": "",
    "services/jobs.py": "from database import engine\n",
    "worker/dispatch.py": "from database import models\n",
    "worker/execution.py": "from services import jobs\n",
    "worker/config.py": "",
    "worker/app.py": "from worker import config, dispatch\n",
    "api/routes.py": "from services.jobs import x\nfrom worker.dispatch import publish\n",
}


def test_the_project_keeps_its_import_rules() -> None:
    assert check(ROOT) == []


def test_the_command_line_fails_on_a_violation(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "services/jobs.py": "from api import routes\n"})
    script = ROOT / "scripts" / "check_imports.py"
    run = subprocess.run(
        [sys.executable, str(script), str(root)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "services/jobs.py:1: services.jobs imports api.routes" in run.stdout
    clean = tree(tmp_path / "clean", CLEAN)
    ok = subprocess.run([sys.executable, str(script), str(clean)], capture_output=True, check=False)
    assert ok.returncode == 0, ok.stdout


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check(tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("services/jobs.py", "from api.deps import UnitOfWork\n", "services must not import api"),
        ("services/jobs.py", "import api.deps\n", "services must not import api"),
        ("services/jobs.py", "from worker import dispatch\n", "services must not import worker"),
        ("database/models.py", "from services import jobs\n", "database must not import services"),
        ("database/models.py", "import worker.config\n", "database must not import worker"),
        ("api/routes.py", "from worker.app import celery_app\n", "api may import of worker only"),
        ("api/routes.py", "from worker import app\n", "api may import of worker only"),
        # Deferred and type-only imports break a layer as much as module-level ones.
        (
            "api/routes.py",
            "def f():\n    from worker.app import make_celery\n",
            "(deferred): api may import of worker only",
        ),
        (
            "services/jobs.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from api.deps import U\n",
            "(typing): services must not import api",
        ),
        # A relative import is resolved before the rules apply.
        ("services/jobs.py", "from ..api import deps\n", "services must not import api"),
    ],
)
def test_each_layer_rule_is_enforced(tmp_path: Path, path: str, text: str, expected: str) -> None:
    problems = check(tree(tmp_path, {**CLEAN, path: text}))
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_rules_hold_after_a_module_moves_into_a_package(tmp_path: Path) -> None:
    """Path-agnostic: the rules name layers, not files."""
    files = {
        **CLEAN,
        "services/events/jobs.py": "from api.routes import x\n",
        "api/v1/routes.py": "from worker.dispatch import publish\nfrom worker.config import Q\n",
    }
    problems = check(tree(tmp_path, files))
    assert problems == [
        "services/events/jobs.py:1: services.events.jobs imports api.routes: "
        "services must not import api"
    ]


@pytest.mark.parametrize(
    "b_imports_a",
    [
        "from services import a\n",
        "import services.a\n",
        "from .a import X\n",
        # A cycle through a type-only import still ties the two modules together.
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from services.a import X\n",
        # A function-level import hides a cycle; it does not remove it.
        "def f():\n    from services.a import X\n",
    ],
    ids=["from-package", "import", "relative", "type-checking", "deferred"],
)
def test_an_import_cycle_is_reported(tmp_path: Path, b_imports_a: str) -> None:
    files = {**CLEAN, "services/a.py": "from services.b import Y\n", "services/b.py": b_imports_a}
    assert check(tree(tmp_path, files)) == ["import cycle: services.a <-> services.b"]


def test_a_longer_cycle_across_packages_is_reported_once(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "services/imap/sync.py": "from services.imap.steps import s\n",
        "services/imap/steps.py": "from services.imap.rows import r\n",
        "services/imap/rows.py": "from services.imap.sync import t\n",
    }
    assert check(tree(tmp_path, files)) == [
        "import cycle: services.imap.rows <-> services.imap.steps <-> services.imap.sync"
    ]


# Issue 19's rules: written and tested here, enforced by lint once the code keeps them
# (scripts/check_imports.py ENFORCE_MODULE_RULES, ENFORCE_LIFECYCLE_WRITERS).
TASK_RULES = (("worker.tasks", "database.repositories", "tasks call services"),)


@pytest.mark.parametrize(
    "text",
    [
        "from database.repositories import rules\n",
        "from database.repositories.events import rows as events_repo\n",
        "def f():\n    import database.repositories.rules\n",
    ],
)
def test_a_task_importing_a_repository_is_reported(tmp_path: Path, text: str) -> None:
    files = {**CLEAN, "database/repositories/rules.py": "", "worker/tasks/mail.py": text}
    files["database/repositories/events/rows.py"] = ""
    problems = check(tree(tmp_path, files), module_rules=TASK_RULES)
    assert len(problems) == 1, problems
    assert "worker.tasks.mail imports database.repositories" in problems[0]
    assert "worker.tasks must not import database.repositories" in problems[0]


def test_a_task_calling_a_service_passes_the_task_rule(tmp_path: Path) -> None:
    files = {**CLEAN, "worker/tasks/mail.py": "from services.jobs import run\n"}
    assert check(tree(tmp_path, files), module_rules=TASK_RULES) == []
    # Elsewhere in worker a repository import is not this rule's business.
    files["worker/execution.py"] = "from database.repositories import rows\n"
    files["database/repositories/rows.py"] = ""
    assert check(tree(tmp_path / "w", files), module_rules=TASK_RULES) == []


WRITER = "database.repositories.events.lifecycle"
EVENT = "from database.models import Event\nimport sqlalchemy as sa\n"


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("worker/batch.py", "def f(event):\n    event.status = 'succeeded'\n", "event.status"),
        ("services/x.py", "def f(leader_event):\n    leader_event.history += []\n", "history"),
        (
            "database/repositories/events/batch.py",
            EVENT + "Q = sa.update(Event).values(status='succeeded')\n",
            "writes event status (.values)",
        ),
        (
            "services/nylas/coalesce.py",
            'Q = """UPDATE event SET result = NULL, steps = \'[]\' WHERE id = :id"""\n',
            "writes event steps (SQL)",
        ),
    ],
)
def test_a_lifecycle_write_outside_the_lifecycle_repository_is_reported(
    tmp_path: Path, path: str, text: str, expected: str
) -> None:
    problems = check(tree(tmp_path, {**CLEAN, path: text}), lifecycle_writers=(WRITER,))
    assert len(problems) == 1 and expected in problems[0], problems
    assert f"only {WRITER} may" in problems[0]


def test_the_lifecycle_repository_may_write_and_others_may_write_other_statuses(
    tmp_path: Path,
) -> None:
    files = {
        **CLEAN,
        "database/repositories/events/lifecycle.py": EVENT
        + "Q = sa.update(Event).values(status='x', history=[], steps=[])\n"
        + "def f(event):\n    event.status = 'x'\n",
        # An account's status, and a result column of an event, are not lifecycle state.
        "services/accounts.py": "def f(account, event):\n    account.status = 'x'\n"
        "    event.result = {}\n",
        "database/repositories/accounts.py": "import sqlalchemy as sa\n"
        "Q = sa.update(T).values(status='disabled')\n",
    }
    assert check(tree(tmp_path, files), lifecycle_writers=(WRITER,)) == []
