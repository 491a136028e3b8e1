"""Waiting message.created notifications taken together by one process task (worker/batch.py).

`take_created_peers` locks a grant's newest waiting `message.created` notifications (those no
worker has claimed: `received` or `queued`) with FOR UPDATE SKIP LOCKED, inside the
transaction that then does their work; `finish_peers` ends them in that same transaction. A
rollback (an error, a worker that dies) releases them untouched, for their own task messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.repositories.events.lifecycle import finish_absorbed

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


async def take_created_peers(
    session: AsyncSession,
    *,
    grant_id: str,
    tenant_id: uuid.UUID,
    exclude: Collection[uuid.UUID],
    limit: int,
) -> list[Waiting]:
    """Lock up to `limit` of the grant's newest waiting message.created notifications (the
    oldest are the next task messages in the queue, which other workers are about to claim).

    Only ones whose body came with them (a truncated one needs a Nylas fetch outside the
    transaction: its own task does that), none already tied to another tenant, and none ever
    tried (attempts = 0): one that was tried and is waiting again may be what killed a worker
    or failed a statement, and goes through its own task, spending its own attempts only.
    """
    if limit <= 0:
        return []
    stmt = (
        sa.select(_t)
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
        .with_for_update(skip_locked=True)
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [
        Waiting(
            id=r["id"],
            source=r["source"],
            type=r["type"],
            payload=r["payload"],
            request_id=r["request_id"],
            current_task_id=r["current_task_id"],
            tenant_id=r["tenant_id"],
            row=r,
        )
        for r in rows
    ]


async def finish_peers(
    session: AsyncSession,
    *,
    leader_id: uuid.UUID,
    leader_task_id: str,
    outcomes: list[dict[str, Any]],
) -> None:
    """End the taken notifications in the leader's transaction (lifecycle.finish_absorbed)."""
    await finish_absorbed(
        session, leader_id=leader_id, leader_task_id=leader_task_id, outcomes=outcomes
    )


# Waiting notifications about the same object and grant, locked so no worker claims them
# meanwhile; SKIP LOCKED leaves any that another coalescing worker holds to that worker.
# The first condition is what ix_event_nylas_object_waiting indexes.
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
FOR UPDATE SKIP LOCKED
"""
)


async def take_updated_siblings(
    session: AsyncSession, *, grant_id: str, object_id: str, event_id: uuid.UUID, limit: int
) -> list[Any]:
    """Lock the waiting message.updated notifications about one message of a grant, other than
    `event_id`, oldest first: (id, type, payload, received_at) rows (services.nylas.coalesce)."""
    params = {"object_id": object_id, "grant_id": grant_id, "event_id": event_id, "limit": limit}
    return list((await session.execute(_SIBLINGS, params)).all())
