"""Dead letters: recorded by the worker's engine; listed, shown, replayed and purged for
people, shared by the API and the CLI.

`tenant_id=None` means every tenant (the operator's CLI); the API always passes the caller's.
A replay turns the dead event back into a queued one (its history is kept and gets a
`replayed` entry), marks the dead letter replayed, and publishes only after the commit.
"""

from __future__ import annotations

import base64
import binascii
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import DeadLetter, Event
from database.repositories.events import dead_letters as repo
from database.repositories.events import rows as events_repo
from services.errors import BadRequest, Conflict, NotFound, PostroomError
from services.events.ownership import require_owned_account
from services.events.unit_of_work import Job
from services.tenant_events.emit import TenantEventType, emit
from services.tenant_events.payloads import event_payload

Publish = Callable[..., bool]
MAX_LIMIT = 200


def shown_message(exc: BaseException) -> str:
    """What people are shown of a failure (events, dead letters, logs).

    Our own exceptions carry sentences written without secrets; anything else may quote its
    input (a codec error quoting a password character, a driver echoing a DSN), so only its
    type is shown. The full text stays in the dead letter's traceback, which no API returns.
    """
    if isinstance(exc, PostroomError):
        return exc.message[:2000]
    return type(exc).__name__


_SECRET_KEY = re.compile(r"pass|secret|token|api[-_]?key|authorization|credential", re.I)


def scrub(value: Any) -> Any:
    """Task arguments as they may be shown to people: values under secret-looking keys masked."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


async def record(
    session: AsyncSession,
    *,
    event: Event,
    task_name: str,
    task_id: str,
    exc: BaseException,
    args: list[Any],
    kwargs: dict[str, Any],
    attempts: int,
    step: str | None = None,
) -> None:
    """The dead letter of a failure, in the caller's transaction (which also marks the event)."""
    await repo.record(
        session,
        tenant_id=event.tenant_id,
        event_id=event.id,
        task_name=task_name,
        task_id=task_id,
        step=step,
        args=scrub(args),
        kwargs=scrub(kwargs),
        exception_type=type(exc).__name__,
        exception_message=shown_message(exc),
        # Full detail for operators: stored, never returned by the API.
        traceback="".join(traceback.format_exception(exc))[-20000:],
        attempts=attempts,
    )


async def tell_failed(session: AsyncSession, *, event_id: uuid.UUID) -> None:
    """`job.failed` for an event just dead-lettered, as GET /v1/events/{id} now shows it, in
    the transaction that marks it dead (a replay that dies again tells again). An event of no
    tenant (a webhook for a grant nobody owns) has nobody to tell."""
    event = await events_repo.get(session, event_id)
    if event is None or event.tenant_id is None:
        return
    await emit(
        session,
        tenant_id=event.tenant_id,
        type=TenantEventType.job_failed,
        data={"event": event_payload(event)},
    )


@dataclass
class ReplayJob:
    dead_letter_id: uuid.UUID
    event_id: uuid.UUID
    task_id: str
    task_name: str
    kwargs: dict[str, Any]
    request_id: str | None = None
    published: bool = False

    @property
    def job(self) -> Job:
        return Job(self.task_name, self.event_id, self.task_id, self.kwargs, self.request_id)


def public(dl: DeadLetter, *, detail: bool = False) -> dict[str, Any]:
    """The API.md shape; `detail` adds the traceback and bookkeeping for `show`."""
    data: dict[str, Any] = {
        "id": str(dl.id),
        "event_id": str(dl.event_id) if dl.event_id else None,
        "task_name": dl.task_name,
        "args": dl.args,
        "kwargs": dl.kwargs,
        "exception_type": dl.exception_type,
        "exception_message": dl.exception_message,
        "attempts": dl.attempts,
        "first_failed_at": dl.first_failed_at.isoformat(),
        "last_failed_at": dl.last_failed_at.isoformat(),
        "replayed_at": dl.replayed_at.isoformat() if dl.replayed_at else None,
    }
    if detail:
        data.update(task_id=dl.task_id, replay_count=dl.replay_count, traceback=dl.traceback)
    return data


def encode_cursor(dl: DeadLetter) -> str:
    raw = f"{dl.created_at.isoformat()}|{dl.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, ident = raw.split("|", 1)
        return datetime.fromisoformat(when), uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("The cursor is not one this API gave out.") from exc


async def list_page(
    db: Database,
    *,
    tenant_id: uuid.UUID | None,
    task: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[DeadLetter], str | None]:
    limit = max(1, min(limit, MAX_LIMIT))
    after = decode_cursor(cursor) if cursor else None
    async with db.transaction() as session:
        rows = await repo.page(
            session, tenant_id=tenant_id, limit=limit + 1, task=task, after=after
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


async def show(
    db: Database, dead_letter_id: uuid.UUID, *, tenant_id: uuid.UUID | None
) -> DeadLetter:
    async with db.transaction() as session:
        dl = await repo.get(session, dead_letter_id, tenant_id=tenant_id)
    if dl is None:
        raise NotFound("No such dead letter.")
    return dl


async def prepare_replay(
    session: Any, dead_letter_id: uuid.UUID, *, tenant_id: uuid.UUID | None
) -> ReplayJob:
    """In the caller's transaction: queue the event again and mark the letter replayed."""
    dl = await repo.get(session, dead_letter_id, tenant_id=tenant_id)
    if dl is None:
        raise NotFound("No such dead letter.")
    event = await events_repo.get(session, dl.event_id) if dl.event_id else None
    if event is None:
        raise Conflict("The event of this dead letter no longer exists; it cannot be replayed.")
    await require_owned_account(session, event, tenant_id=tenant_id)
    task_id = str(uuid.uuid4())
    if not await events_repo.prepare_replay(session, event_id=event.id, task_id=task_id):
        raise Conflict("The event is running again already; wait for it to finish.")
    await repo.mark_replayed(session, dl.id)
    return ReplayJob(
        dead_letter_id=dl.id,
        event_id=event.id,
        task_id=task_id,
        task_name=event.task_name,
        kwargs=dict(event.task_kwargs or {}),
        request_id=event.request_id,
    )


def publish_job(publish: Publish, job: ReplayJob) -> ReplayJob:
    """After the commit. A failed publish is fine: the event is queued and the sweeper has it."""
    job.published = publish(**job.job.fields())
    return job


async def replay(
    db: Database, dead_letter_id: uuid.UUID, *, tenant_id: uuid.UUID | None, publish: Publish
) -> ReplayJob:
    async with db.transaction() as session:
        job = await prepare_replay(session, dead_letter_id, tenant_id=tenant_id)
    return publish_job(publish, job)


async def pending_ids(
    db: Database, *, tenant_id: uuid.UUID | None, task: str | None = None
) -> list[uuid.UUID]:
    """Dead letters not replayed yet, oldest first (what `replay --all` works through)."""
    async with db.transaction() as session:
        return await repo.ids(session, tenant_id=tenant_id, task=task)


async def delete(db: Database, dead_letter_id: uuid.UUID, *, tenant_id: uuid.UUID | None) -> None:
    async with db.transaction() as session:
        if not await repo.delete(session, dead_letter_id, tenant_id=tenant_id):
            raise NotFound("No such dead letter.")


async def purge(db: Database, *, tenant_id: uuid.UUID | None, task: str | None = None) -> int:
    async with db.transaction() as session:
        return await repo.purge(session, tenant_id=tenant_id, task=task)


async def count(db: Database, *, tenant_id: uuid.UUID | None, task: str | None = None) -> int:
    async with db.transaction() as session:
        return len(await repo.ids(session, tenant_id=tenant_id, task=task, unreplayed=False))
