"""`postroom dlq`: inspect, replay and purge dead letters across every tenant (operators)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from database.engine import Database
from services.errors import PostroomError
from services.events import dead_letters as dlq
from settings import get_settings

T = TypeVar("T")
app = typer.Typer(help="Dead letters: tasks that failed for good.", no_args_is_help=True)
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only this task name.")]


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _run(body: Callable[[Database], Awaitable[T]]) -> T:
    """Run one command against the database, turning known errors into one sentence."""

    async def main() -> T:
        db = Database.from_settings(get_settings(), pool_size=2)
        try:
            return await body(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except PostroomError as exc:
        _fail(exc.message)
    except OSError as exc:
        _fail(f"Cannot reach the database: {exc.strerror or exc}.")
    raise AssertionError("unreachable")


def _publisher() -> dlq.Publish:
    from worker import dispatch
    from worker.config import make_celery

    return partial(dispatch.publish, make_celery(get_settings(), publisher_only=True))


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        _fail(f"{value!r} is not a dead letter id.")
    raise AssertionError("unreachable")


@app.command("list")
def list_(task: TaskOpt = None, limit: Annotated[int, typer.Option(min=1, max=200)] = 50) -> None:
    """One line per dead letter, newest first: id, task, error, attempts, last failure, state."""
    rows, _ = _run(lambda db: dlq.list_page(db, tenant_id=None, task=task, limit=limit))
    for dl in rows:
        state = f"replayed {dl.replayed_at.isoformat()}" if dl.replayed_at else "dead"
        typer.echo(
            f"{dl.id} {dl.task_name} {dl.exception_type} attempts={dl.attempts} "
            f"{dl.last_failed_at.isoformat()} {state}"
        )


@app.command()
def show(dead_letter_id: str) -> None:
    """Everything about one dead letter, traceback included, as JSON."""
    ident = _uuid(dead_letter_id)
    dl = _run(lambda db: dlq.show(db, ident, tenant_id=None))
    typer.echo(json.dumps(dlq.public(dl, detail=True), indent=2))


@app.command()
def replay(
    dead_letter_id: Annotated[str | None, typer.Argument()] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter not replayed.")] = False,
    task: TaskOpt = None,
) -> None:
    """Queue a dead letter's event again as a new attempt (its history is kept)."""
    publish = _publisher()
    if dead_letter_id is not None:
        if all_:
            _fail("Give a dead letter id or --all, not both.")
        ident = _uuid(dead_letter_id)
        job = _run(lambda db: dlq.replay(db, ident, tenant_id=None, publish=publish))
        typer.echo(f"replayed {job.dead_letter_id} event={job.event_id} task_id={job.task_id}")
        return
    if not all_:
        _fail("Give a dead letter id, or --all (optionally with --task NAME).")
    done, failed = _run(lambda db: _replay_all(db, task=task, publish=publish))
    typer.echo(f"replayed {done}, could not replay {failed}")
    if failed:
        raise typer.Exit(1)


async def _replay_all(db: Database, *, task: str | None, publish: dlq.Publish) -> tuple[int, int]:
    ids = await dlq.pending_ids(db, tenant_id=None, task=task)
    done = failed = 0
    columns: list[Any] = [
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, transient=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("replay", total=len(ids))
        for ident in ids:
            try:
                await dlq.replay(db, ident, tenant_id=None, publish=publish)
                done += 1
            except PostroomError as exc:
                failed += 1
                progress.console.print(f"{ident}: {exc.message}")
            progress.advance(bar)
    return done, failed


@app.command()
def purge(
    task: TaskOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters (all, or one task's); their events stay as they are."""
    total = _run(lambda db: dlq.count(db, tenant_id=None, task=task))
    if total == 0:
        typer.echo("nothing to purge")
        return
    what = f"{total} dead letter(s)" + (f" of {task}" if task else "")
    if not yes and not typer.confirm(f"Delete {what}?"):
        _fail("Nothing deleted.")
    deleted = _run(lambda db: dlq.purge(db, tenant_id=None, task=task))
    typer.echo(f"deleted {deleted}")


def main() -> None:
    app()
