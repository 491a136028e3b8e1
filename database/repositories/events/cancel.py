"""Cancelling an event that no worker has taken yet (API.md "Events": cancel)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventStatus

_t = Event.__table__  # type: ignore[attr-defined]
_now = sa.func.now()


async def cancel(
    session: AsyncSession, *, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> Event | None:
    """Mark the tenant's event cancelled if it is still waiting; the row, or None otherwise.

    One conditional UPDATE: the worker's claim (events.claim) is an UPDATE on the same row, so
    whichever commits first wins and the other finds a status it does not accept. A task
    message still in the broker is then refused by its claim and finishes without effect.
    """
    entry = {
        "task_id": None,
        "started_at": None,
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_ms": None,
        "outcome": EventStatus.cancelled.value,
        "error": None,
    }
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == event_id,
            _t.c.tenant_id == tenant_id,
            _t.c.status.in_(EventStatus.cancellable()),
        )
        .values(
            status=EventStatus.cancelled,
            history=_t.c.history.op("||")(
                sa.func.jsonb_build_array(sa.cast(entry, _t.c.history.type))
            ),
            # No lease: the outbox sweeper only looks at unfinished events anyway.
            due_at=None,
            finished_at=_now,
            updated_at=_now,
        )
        .returning(*_t.c)
    )
    row = (await session.execute(stmt)).mappings().one_or_none()
    return Event(**row) if row is not None else None
