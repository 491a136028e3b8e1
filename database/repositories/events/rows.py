"""Event rows: the ledger of every webhook and job, and the atomic claims workers take on them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from database.models import Event, EventStatus

Executor = AsyncSession | AsyncConnection

UNFINISHED = (
    EventStatus.received,
    EventStatus.queued,
    EventStatus.processing,
    EventStatus.retrying,
)
_t = Event.__table__  # type: ignore[attr-defined]
_now = sa.func.now()


def _interval(seconds: float) -> Any:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)


async def insert_once(
    session: Executor,
    *,
    event_id: uuid.UUID,
    source: str,
    type: str,
    external_id: str | None,
    task_name: str,
    task_id: str,
    payload: dict[str, Any],
    stale_after_s: float,
    task_kwargs: dict[str, Any] | None = None,
    tenant_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    request_hash: str | None = None,
    request_id: str | None = None,
    not_before: datetime | None = None,
) -> bool:
    """Insert the event unless (source, external_id) exists; True when this call created it.

    With `not_before` the event is `scheduled`: nothing publishes it until release_due()
    turns it into a queued one at that time.
    """
    stmt = (
        insert(_t)
        .values(
            id=event_id,
            source=source,
            type=type,
            external_id=external_id,
            task_name=task_name,
            task_kwargs=task_kwargs or {},
            payload=payload,
            status=EventStatus.received if not_before is None else EventStatus.scheduled,
            not_before=not_before,
            tenant_id=tenant_id,
            user_id=user_id,
            account_id=account_id,
            request_hash=request_hash,
            request_id=request_id,
            current_task_id=task_id,
            task_ids=[task_id],
            publish_count=1,
            due_at=_now + _interval(stale_after_s) if not_before is None else None,
        )
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


@asynccontextmanager
async def webhook_connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A driver-pool connection for the webhook's autocommit statements (database.engine.
    driver_pool: asyncpg's own errors come through unwrapped).

    An answer from the server (any PostgresError) keeps the connection; anything else (a
    statement cut short by the caller's deadline, a broken socket) closes it at once. Handed
    back as it is, asyncpg would first wait for the server to confirm the cancel, up to its
    command timeout (10 s): a silent host held the webhook's 503 that long past the deadline,
    beyond Nylas's own 10 s."""
    conn = await pool.acquire()
    try:
        yield conn
    except asyncpg.PostgresError:
        await pool.release(conn)
        raise
    except BaseException:
        conn.terminate()
        await pool.release(conn)
        raise
    await pool.release(conn)


# The webhook's one statement as plain SQL, run on the API's driver pool (asyncpg prepares it
# once per connection): the rows insert_once() writes, without SQLAlchemy building a statement
# and checking a connection out of its pool per call (docs/benchmarks.md). Many webhooks' rows
# go in one statement (the group commit, services.events.ingest.IngestBatcher), committed
# together with one WAL flush, as arrays that unnest() turns back into rows. Each body goes in
# as the JSON text that was verified; PostgreSQL parses it into jsonb. The RETURNING names the
# rows this statement created: a row whose id is missing duplicates one stored before.
_INSERT_WEBHOOKS = """
INSERT INTO event (id, source, type, external_id, task_name, task_kwargs, payload, status,
                   attempts, task_ids, current_task_id, history, steps, publish_count,
                   request_id, due_at)
SELECT r.id, $1, r.type, r.external_id, $2, '{}'::jsonb, CAST(r.payload AS jsonb), 'received',
       0, jsonb_build_array(r.task_id), r.task_id, '[]'::jsonb, '[]'::jsonb, 1,
       r.request_id, now() + make_interval(secs => r.stale)
FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::float8[]) AS r(id, type, external_id, payload, task_id, request_id, stale)
ON CONFLICT (source, external_id) DO NOTHING
RETURNING id
"""
_WEBHOOK_EVENT_IDS = (
    "SELECT external_id, id FROM event WHERE source = $1 AND external_id = ANY($2::text[])"
)


@dataclass(frozen=True)
class WebhookRow:
    """One verified notification's row, as insert_webhook_events() writes it."""

    event_id: uuid.UUID
    type: str
    external_id: str
    task_id: str
    payload_json: str
    request_id: str | None
    stale_after_s: float


async def insert_webhook_events(
    conn: asyncpg.Connection, *, source: str, task_name: str, rows: Sequence[WebhookRow]
) -> set[uuid.UUID]:
    """Insert the rows in one autocommit statement (committed when it returns); the ids of
    the rows it created. The caller orders the rows (by external_id) so that two batches
    that share ids wait on each other in one order and never deadlock."""
    found = await conn.fetch(
        _INSERT_WEBHOOKS,
        str(source),
        task_name,
        [r.event_id for r in rows],
        [r.type for r in rows],
        [r.external_id for r in rows],
        [r.payload_json for r in rows],
        [r.task_id for r in rows],
        [r.request_id for r in rows],
        [float(r.stale_after_s) for r in rows],
    )
    return {record[0] for record in found}


async def webhook_event_ids(
    conn: asyncpg.Connection, source: str, external_ids: Sequence[str]
) -> dict[str, uuid.UUID]:
    """The ids of the events stored for these external ids (those that exist)."""
    found = await conn.fetch(_WEBHOOK_EVENT_IDS, str(source), list(external_ids))
    return {record[0]: record[1] for record in found}


async def get(session: AsyncSession, event_id: uuid.UUID) -> Event | None:
    return await session.get(Event, event_id, populate_existing=True)


async def get_by_external_id(session: AsyncSession, source: str, external_id: str) -> Event | None:
    stmt = sa.select(Event).where(_t.c.source == source, _t.c.external_id == external_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def id_by_external_id(session: Executor, source: str, external_id: str) -> uuid.UUID | None:
    stmt = sa.select(_t.c.id).where(_t.c.source == source, _t.c.external_id == external_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> Event | None:
    stmt = sa.select(Event).where(_t.c.id == event_id, _t.c.tenant_id == tenant_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_by_task_id(session: AsyncSession, tenant_id: uuid.UUID, task_id: str) -> Event | None:
    stmt = (
        sa.select(Event)
        .where(_t.c.tenant_id == tenant_id, _t.c.task_ids.contains([task_id]))
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def claim(
    session: AsyncSession,
    *,
    event_id: uuid.UUID,
    task_id: str,
    lease_s: float,
    redelivered: bool = False,
) -> Event | None:
    """Take the event for this task run, or None when another run owns it or it has finished.

    A fresh event may be taken by any copy (the first wins); a retrying event only by the
    scheduled retry (same task id) or once its lease is over; a processing event only when
    its lease is over, or when the broker redelivers the same task id because the worker
    that held it was lost (task_reject_on_worker_lost).
    """
    lease_over = _t.c.due_at < _now
    same_task = _t.c.current_task_id == task_id
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event_id,
            sa.or_(
                _t.c.status.in_([EventStatus.received, EventStatus.queued]),
                sa.and_(
                    _t.c.status == EventStatus.retrying,
                    sa.or_(same_task, lease_over),
                ),
                sa.and_(
                    _t.c.status == EventStatus.processing,
                    sa.or_(
                        lease_over,
                        sa.and_(same_task, sa.true() if redelivered else sa.false()),
                        # The next part of a job cut into parts (continue_with): handed to this
                        # task id, not started yet; its first copy takes it.
                        sa.and_(same_task, _t.c.started_at.is_(None)),
                    ),
                ),
            ),
        )
        .values(
            status=EventStatus.processing,
            attempts=_t.c.attempts + 1,
            current_task_id=task_id,
            task_ids=sa.case(
                (_t.c.task_ids.contains([task_id]), _t.c.task_ids),
                else_=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(task_id)),
            ),
            started_at=_now,
            due_at=_now + _interval(lease_s),
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    row = (await session.execute(stmt)).mappings().one_or_none()
    return Event(**row) if row is not None else None


def _history_entry(
    *, task_id: str, started_at: datetime | None, outcome: str, error: str | None
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "task_id": task_id,
        "started_at": started_at.isoformat() if started_at else None,
        "finished_at": now.isoformat(),
        "duration_ms": round((now - started_at).total_seconds() * 1000, 1) if started_at else None,
        "outcome": outcome,
        "error": error,
    }


async def finish(
    session: AsyncSession,
    *,
    event: Event,
    task_id: str,
    status: EventStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    tenant_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    retry_in_s: float | None = None,
) -> bool:
    """Record the end of one attempt; False when this run no longer owns the event."""
    entry = _history_entry(
        task_id=task_id, started_at=event.started_at, outcome=status, error=error
    )
    values: dict[str, Any] = {
        "status": status,
        "history": _t.c.history.op("||")(
            sa.func.jsonb_build_array(sa.cast(entry, _t.c.history.type))
        ),
        "updated_at": _now,
        "last_error": error,
    }
    if result is not None:
        values["result"] = result
    if tenant_id is not None:
        values["tenant_id"] = tenant_id
    if account_id is not None:
        values["account_id"] = account_id
    if status == EventStatus.retrying:
        # The sweeper may publish again only if the scheduled retry never shows up.
        values["due_at"] = _now + _interval((retry_in_s or 0) + 300)
    else:
        values["due_at"] = None
        values["finished_at"] = _now
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event.id,
            _t.c.status == EventStatus.processing,
            _t.c.current_task_id == task_id,
        )
        .values(**values)
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def continue_with(
    session: AsyncSession,
    *,
    event: Event,
    task_id: str,
    next_task_id: str,
    result: dict[str, Any],
    stale_after_s: float,
) -> bool:
    """One part of a job cut into parts is done: hand the event to its next part's task id.

    The work wrote its progress (set_progress). The event stays `processing` (the job runs
    until its last part), with no start time until
    the next part claims it (claim), and the lease of a queued event: if that publish is lost,
    the outbox sweeper publishes the event again. False when this run no longer owns it.
    """
    entry = _history_entry(
        task_id=task_id, started_at=event.started_at, outcome="continued", error=None
    )
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event.id,
            _t.c.status == EventStatus.processing,
            _t.c.current_task_id == task_id,
        )
        .values(
            current_task_id=next_task_id,
            task_ids=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(next_task_id)),
            history=_t.c.history.op("||")(
                sa.func.jsonb_build_array(sa.cast(entry, _t.c.history.type))
            ),
            publish_count=_t.c.publish_count + 1,
            result=result,
            # A part is not an attempt: the next part's claim counts it again, so a job of 50
            # parts keeps its whole retry budget for real failures (execution.retries_used).
            attempts=_t.c.attempts - 1,
            last_error=None,
            started_at=None,
            due_at=_now + _interval(stale_after_s),
            updated_at=_now,
        )
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def uncount_attempt(session: AsyncSession, *, event_id: uuid.UUID) -> None:
    """Take back the attempt the last claim counted: that run only waited (an IMAP slot)."""
    await session.execute(
        sa.update(_t)
        .where(_t.c.id == event_id, _t.c.attempts > 0)
        .values(attempts=_t.c.attempts - 1)
    )


async def renew_lease(
    session: Executor, *, event_id: uuid.UUID, task_id: str, lease_s: float
) -> bool:
    """Push the lease of a claim this run still holds; False when it no longer holds it."""
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event_id,
            _t.c.status == EventStatus.processing,
            _t.c.current_task_id == task_id,
        )
        .values(due_at=_now + _interval(lease_s))
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def set_progress(
    session: AsyncSession, *, event_id: uuid.UUID, progress: dict[str, Any], lease_s: float
) -> None:
    """Show progress and extend the lease: a long task that reports progress is alive."""
    await session.execute(
        sa.update(_t)
        .where(_t.c.id == event_id, _t.c.status == EventStatus.processing)
        .values(progress=progress, due_at=_now + _interval(lease_s), updated_at=_now)
    )


async def take_due(session: AsyncSession, *, limit: int, stale_after_s: float) -> list[Event]:
    """Lock and return unfinished events whose lease ran out, pushing their lease forward.

    SKIP LOCKED lets two sweepers run without publishing the same event twice in one round.
    """
    due = (
        sa.select(_t.c.id)
        .where(_t.c.status.in_(UNFINISHED), _t.c.due_at < _now)
        .order_by(_t.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # Task ids of re-publishes are "<event id>.<n>": unique, and readable in Flower.
    new_task_id = sa.cast(_t.c.id, sa.String) + "." + sa.cast(_t.c.publish_count + 1, sa.String)
    stmt = (
        sa.update(_t)
        .where(_t.c.id.in_(due))
        .values(
            status=sa.case(
                (_t.c.status == EventStatus.received, EventStatus.queued),
                # A job's next part not claimed in time (continue_with): the job is still
                # running, so it stays `processing`, handed to the new task id.
                (
                    sa.and_(_t.c.status == EventStatus.processing, _t.c.started_at.is_(None)),
                    EventStatus.processing,
                ),
                (_t.c.status == EventStatus.processing, EventStatus.queued),
                else_=_t.c.status,
            ),
            current_task_id=new_task_id,
            task_ids=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(new_task_id)),
            publish_count=_t.c.publish_count + 1,
            due_at=_now + _interval(stale_after_s),
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Event(**r) for r in rows]


async def release_due(session: AsyncSession, *, limit: int, stale_after_s: float) -> list[Event]:
    """Turn scheduled events whose time has come into queued ones and return them to publish.

    Only rows still `scheduled` change (a cancel that got there first wins), and SKIP LOCKED
    keeps two sweepers from releasing the same event. A released event gets the usual lease:
    if its publish is lost, take_due() publishes it again. Its task id stays the one the
    API answered with.
    """
    due = (
        sa.select(_t.c.id)
        .where(_t.c.status == EventStatus.scheduled, _t.c.not_before <= _now)
        .order_by(_t.c.not_before)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        sa.update(_t)
        .where(_t.c.id.in_(due), _t.c.status == EventStatus.scheduled)
        .values(
            status=EventStatus.queued,
            due_at=_now + _interval(stale_after_s),
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Event(**r) for r in rows]


async def prepare_replay(session: AsyncSession, *, event_id: uuid.UUID, task_id: str) -> bool:
    """Turn a finished event back into a queued one for a new attempt; history is kept.

    Only a finished event: replaying one that is still running would run it twice. The
    history gets a `replayed` entry holding the attempts so far, which is where the new run's
    retry budget starts (worker.execution.retries_used).
    """
    entry = {
        "task_id": task_id,
        "started_at": None,
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_ms": None,
        "outcome": "replayed",
        "error": None,
    }
    marker = sa.cast(entry, _t.c.history.type).op("||")(
        sa.func.jsonb_build_object("attempts_before", _t.c.attempts)
    )
    stmt = (
        sa.update(_t)
        .where(_t.c.id == event_id, _t.c.status.in_(EventStatus.finished()))
        .values(
            status=EventStatus.queued,
            history=_t.c.history.op("||")(sa.func.jsonb_build_array(marker)),
            current_task_id=task_id,
            task_ids=_t.c.task_ids.op("||")(sa.func.jsonb_build_array(task_id)),
            publish_count=_t.c.publish_count + 1,
            finished_at=None,
            due_at=_now + _interval(60),
            updated_at=_now,
        )
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def delete_finished_before(session: AsyncSession, *, before: datetime) -> int:
    stmt = sa.delete(_t).where(_t.c.status.in_(EventStatus.finished()), _t.c.finished_at < before)
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def cutoff(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
