"""Waiting notifications whose work another run takes on: a grant's message.created (a batch,
services/nylas/batch.py) and one message's message.updated (coalesced, services.nylas.coalesce).

Read only: the caller absorbs what it found (lifecycle.absorb, by status and lease like any
claim) and the lifecycle repository ends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event

_t = Event.__table__  # type: ignore[attr-defined]

# The expression ix_event_nylas_created_waiting indexes (migration 0014), and its predicate.
GRANT = sa.literal_column(
    "(coalesce(payload #>> '{data,grant_id}', payload #>> '{data,object,grant_id}'))", sa.Text
)
# Literal, as the index's predicate is: a prepared statement's generic plan cannot prove
# that `status IN ($1, $2)` implies it, and would scan the whole event table instead.
_WAITING = sa.text(
    "event.source = 'nylas' AND event.type = 'message.created'"
    " AND event.status IN ('received', 'queued')"
)


@dataclass
class Waiting:
    """A taken notification: the columns a batch reads (building an Event per row cost
    about a sixth of a batch's CPU); `event()` builds one when a rare path needs it."""

    id: uuid.UUID
    source: str
    type: str
    payload: dict[str, Any]
    request_id: str | None
    current_task_id: str | None
    tenant_id: uuid.UUID | None
    row: Any

    def event(self) -> Event:
        return Event(**self.row)

    @classmethod
    def of(cls, row: Any) -> Waiting:
        return cls(
            id=row["id"],
            source=row["source"],
            type=row["type"],
            payload=row["payload"],
            request_id=row["request_id"],
            current_task_id=row["current_task_id"],
            tenant_id=row["tenant_id"],
            row=row,
        )


async def created_peer_ids(
    session: AsyncSession,
    *,
    grant_id: str,
    tenant_id: uuid.UUID,
    exclude: Collection[uuid.UUID],
    limit: int,
) -> list[uuid.UUID]:
    """Up to `limit` of the grant's newest waiting message.created notifications (the oldest
    are the next task messages in the queue, which other workers are about to claim), read
    without a lock: the caller absorbs them (lifecycle.absorb), which skips any taken since.

    Only ones whose body came with them (a truncated one needs a Nylas fetch outside the
    transaction: its own task does that), none already tied to another tenant, and none ever
    tried (attempts = 0): one that was tried, or was in a batch that failed (absorbing counts
    an attempt), goes through its own task, spending its own attempts only.
    """
    if limit <= 0:
        return []
    stmt = (
        sa.select(_t.c.id)
        .where(
            GRANT.op("=")(sa.bindparam("grant_id", grant_id, type_=sa.Text)),
            _WAITING,
            _t.c.id.not_in(list(exclude)),
            _t.c.attempts == 0,
            sa.or_(_t.c.tenant_id.is_(None), _t.c.tenant_id == tenant_id),
            sa.text("jsonb_typeof(payload #> '{data,object,body}') = 'string'"),
            sa.text("jsonb_typeof(payload #> '{data,object,id}') = 'string'"),
        )
        .order_by(_t.c.received_at.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


# Waiting notifications about the same object and grant (read only: the caller absorbs them,
# lifecycle.absorb). The first condition is what ix_event_nylas_object_waiting indexes.
_SIBLINGS = sa.text(
    """
SELECT id, type, payload, received_at FROM event
WHERE (payload #>> '{data,object,id}') = :object_id
  AND source = 'nylas' AND status IN ('received', 'queued', 'retrying')
  AND id <> :event_id
  AND (type = 'message.updated' OR type LIKE 'message.updated.%')
  AND coalesce(payload #>> '{data,grant_id}', payload #>> '{data,object,grant_id}') = :grant_id
ORDER BY received_at
LIMIT :limit
"""
)


async def updated_siblings(
    session: AsyncSession, *, grant_id: str, object_id: str, event_id: uuid.UUID, limit: int
) -> list[Any]:
    """The waiting message.updated notifications about one message of a grant, other than
    `event_id`, oldest first: (id, type, payload, received_at) rows (services.nylas.coalesce)."""
    params = {"object_id": object_id, "grant_id": grant_id, "event_id": event_id, "limit": limit}
    return list((await session.execute(_SIBLINGS, params)).all())
