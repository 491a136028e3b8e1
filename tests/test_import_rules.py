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


def test_engine19_tasks_import_no_repositories(tmp_path: Path) -> None:
    """engine19-tasks-import-no-repositories: a task module that reaches for SQL is caught,
    however it imports it; a service doing so is not."""
    base = {
        **CLEAN,
        "database/repositories/events/rows.py": "from database import models\n",
        "services/steps.py": "from database.repositories.events import rows\n",
    }
    assert (
        check(
            tree(tmp_path / "ok", {**base, "worker/tasks/mail.py": "from services import steps\n"})
        )
        == []
    )
    for i, text in enumerate(
        (
            "from database.repositories.events import rows\n",
            "import database.repositories.events.rows\n",
            "def f():\n    from database.repositories.events.rows import claim\n",
        )
    ):
        found = check(tree(tmp_path / f"bad{i}", {**base, "worker/tasks/mail.py": text}))
        assert len(found) == 1 and "engine19-tasks-import-no-repositories" in found[0], found


LIFECYCLE = "database/repositories/events/lifecycle.py"
UPDATE_STATUS = (
    "import sqlalchemy as sa\n"
    "from database.models import Event\n"
    "_t = Event.__table__\n"
    "def f():\n"
    "    return sa.update(_t).where(_t.c.id == 1).values(status='succeeded', updated_at=1)\n"
)


@pytest.mark.parametrize(
    "text",
    [
        UPDATE_STATUS,
        UPDATE_STATUS.replace("status='succeeded'", "history=[]"),
        "import sqlalchemy as sa\nfrom database.models import Event\n"
        "q = sa.update(Event).values(steps=[])\n",
        "import sqlalchemy as sa\n"
        "MARK = sa.text('''UPDATE event SET\n  status = 'succeeded', due_at = NULL\n"
        "WHERE id = ANY(:ids)''')\n",
        "def f(event):\n    event.status = 'dead'\n",
    ],
    ids=["update-status", "update-history", "orm-update-steps", "sql-text", "attribute"],
)
def test_engine19_lifecycle_writes_only_in_the_lifecycle_repository(
    tmp_path: Path, text: str
) -> None:
    """engine19-lifecycle-writes-only-here: each way of writing an event's status, history or
    steps is caught outside the lifecycle repository and allowed inside it."""
    models = "database/models.py"
    outside = check(tree(tmp_path / "out", {**CLEAN, "services/coalesce.py": text}))
    assert len(outside) == 1 and "engine19-lifecycle-writes-only-here" in outside[0], outside
    assert outside[0].startswith("services/coalesce.py:")
    inside = check(tree(tmp_path / "in", {**CLEAN, models: "class Event: ...\n", LIFECYCLE: text}))
    assert inside == []


def test_engine19_lifecycle_rule_leaves_other_writes_alone(tmp_path: Path) -> None:
    """Progress, leases and other tables' statuses are not the event's lifecycle."""
    text = (
        "import sqlalchemy as sa\n"
        "from database.models import Account, Event\n"
        "_t = Event.__table__\n"
        "_a = Account.__table__\n"
        "a = sa.update(_t).values(progress={}, due_at=None)\n"
        "b = sa.update(_a).values(status='active')\n"
        "c = sa.text('UPDATE account SET status = 1')\n"
        "def f(account):\n    account.status = 'active'\n"
    )
    assert check(tree(tmp_path, {**CLEAN, "services/other.py": text})) == []
