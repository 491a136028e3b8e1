"""Event rows: the ledger of every webhook and job. Their lifecycle writes (claims, ends,
replays) live in lifecycle.py and are imported here under their old names."""

from __future__ import annotations

import uuid
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


# The webhook's one statement as plain SQL, run on the API's driver pool (asyncpg, which
# prepares it once per connection): the same row insert_once() writes, without SQLAlchemy
# building a statement and checking a connection out of its pool per call (together about
# half of the ingest path's CPU, docs/benchmarks.md). The body goes in as the JSON text that
# was verified; PostgreSQL parses it into jsonb.
_INSERT_WEBHOOK = """
INSERT INTO event (id, source, type, external_id, task_name, task_kwargs, payload, status,
                   attempts, task_ids, current_task_id, history, steps, publish_count,
                   request_id, due_at)
VALUES ($1, $2, $3, $4, $5, '{}'::jsonb, CAST($6::text AS jsonb), 'received',
        0, jsonb_build_array($7::text), $7, '[]'::jsonb, '[]'::jsonb, 1,
        $8, now() + make_interval(secs => $9))
ON CONFLICT (source, external_id) DO NOTHING
RETURNING id
"""
_WEBHOOK_EVENT_ID = "SELECT id FROM event WHERE source = $1 AND external_id = $2"


async def _fetchval(pool: asyncpg.Pool, query: str, *args: Any) -> Any:
    """pool.fetchval, except that a statement cut short (the caller's deadline) or a broken
    connection closes the connection at once. Handed back as it is, asyncpg would first wait
    for the server to confirm the cancel, up to its command timeout (10 s): a silent host held
    the webhook's 503 that long past the deadline, beyond Nylas's own 10 s."""
    conn = await pool.acquire()
    try:
        value = await conn.fetchval(query, *args)
    except asyncpg.PostgresError:  # the server answered: the connection is sound
        await pool.release(conn)
        raise
    except BaseException:
        conn.terminate()
        await pool.release(conn)
        raise
    await pool.release(conn)
    return value


async def insert_webhook_event(
    pool: asyncpg.Pool,
    *,
    event_id: uuid.UUID,
    source: str,
    type: str,
    external_id: str,
    task_name: str,
    task_id: str,
    payload_json: str,
    stale_after_s: float,
    request_id: str | None,
) -> bool:
    """insert_once() for the ingest path, one autocommit statement; True when new.

    `pool` is database.engine.driver_pool(): asyncpg's own errors come through unwrapped.
    """
    row_id = await _fetchval(
        pool,
        _INSERT_WEBHOOK,
        event_id,
        str(source),
        type,
        external_id,
        task_name,
        payload_json,
        task_id,
        request_id,
        float(stale_after_s),
    )
    return row_id is not None


async def webhook_event_id(pool: asyncpg.Pool, source: str, external_id: str) -> uuid.UUID | None:
    """The id of the event stored for (source, external_id), on the driver pool."""
    found = await _fetchval(pool, _WEBHOOK_EVENT_ID, str(source), external_id)
    return found if isinstance(found, uuid.UUID) else None


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
