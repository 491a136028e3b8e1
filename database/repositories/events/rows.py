"""Event rows: the ledger of every webhook and job. Their lifecycle writes (claims, ends,
replays) live in lifecycle.py and are imported here under their old names."""

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
from database.repositories.events.lifecycle import UNFINISHED as UNFINISHED
from database.repositories.events.lifecycle import claim as claim
from database.repositories.events.lifecycle import continue_with as continue_with
from database.repositories.events.lifecycle import finish as finish
from database.repositories.events.lifecycle import prepare_replay as prepare_replay
from database.repositories.events.lifecycle import release_due as release_due
from database.repositories.events.lifecycle import take_due as take_due
from database.repositories.events.lifecycle import uncount_attempt as uncount_attempt

Executor = AsyncSession | AsyncConnection

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
    any_conflict: bool = False,
) -> bool:
    """Insert the event unless (source, external_id) exists; True when this call created it.

    With `any_conflict`, a row any unique index refuses is not inserted either (a push sync
    while one of its folder is unfinished: ux_event_push_unfinished).

    With `not_before` the event is `scheduled`: nothing publishes it until release_due()
    turns it into a queued one at that time.
    """
    stmt = insert(_t).values(
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
    stmt = (
        stmt.on_conflict_do_nothing()
        if any_conflict
        else stmt.on_conflict_do_nothing(index_elements=["source", "external_id"])
    )
    return (await session.execute(stmt.returning(_t.c.id))).scalar_one_or_none() is not None


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


async def delete_finished_before(session: AsyncSession, *, before: datetime) -> int:
    stmt = sa.delete(_t).where(_t.c.status.in_(EventStatus.finished()), _t.c.finished_at < before)
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def cutoff(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
