"""Coalescing repeated `message.updated` notifications about one message (issue 12, storms).

Nylas may send many `message.updated` notifications for one message within seconds (a user
flagging, moving, reading). Each is stored on arrival as its own event, so each is
acknowledged and accounted for. The work is coalesced at processing time: the worker that
claims one of them also absorbs the other notifications about the same grant and message
that no worker has taken yet (by status and lease, as a claim takes its own), applies the
newest stored state (the highest Nylas `time`, then the latest arrival) and ends the others
`coalesced`, naming the event that did the work, in the
same transaction as that work. Their task messages then find them finished and do nothing.

Why at processing time and not with a Redis key at ingest: the window is then exactly "while
the notification waits in the queue", which is long in a storm (where coalescing pays) and
zero when the queue is empty (where it would only add latency); nothing is lost if a key
expires or Redis restarts; the outbox sweeper and replays need no special case; and the
webhook route keeps its one INSERT. The cost is that a coalesced notification still goes
through the broker and one claim UPDATE that matches nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Event, EventSource, EventStatus
from database.repositories.events import batch as waiting_repo
from database.repositories.events import lifecycle
from services.events import absorbed
from services.events.webhooks import base_type

COALESCED_TYPES = frozenset({"message.updated"})

# One claim locks at most this many siblings: a pathological flood on one message is then
# worked off in groups instead of one huge lock set.
MAX_SIBLINGS = 1000


@dataclass
class Notification:
    """The stored notification a worker applies: its own, or a newer sibling's."""

    id: uuid.UUID
    type: str
    payload: dict[str, Any]
    tenant_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None


@dataclass
class Group:
    applied: Notification
    coalesced: list[uuid.UUID]
    absorbed_at: datetime | None = None  # the absorption's token (lifecycle.absorb)


def _key(payload: dict[str, Any]) -> tuple[str, str] | None:
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return None
    obj = data["object"]
    grant = data.get("grant_id") or obj.get("grant_id")
    object_id = obj.get("id")
    if isinstance(grant, str) and grant and isinstance(object_id, str) and object_id:
        return grant, object_id
    return None


def _version(payload: dict[str, Any]) -> int:
    t = payload.get("time")
    return t if isinstance(t, int) and not isinstance(t, bool) else -1


async def take_group(db: Database, event: Event, *, lease_s: float) -> Group:
    """The notification to apply for `event` and the waiting siblings it stands for.

    The siblings are found without a lock and absorbed (services.events.absorbed) in a short
    transaction of their own: `processing` under this run's lease, which no other worker
    claims while it lasts; no row lock is held across the work (nor across the Nylas fetch a
    truncated newer sibling needs)."""
    own = Notification(id=event.id, type=event.type, payload=event.payload)
    key = _key(event.payload) if event.source == EventSource.nylas else None
    if key is None or base_type(event.type) not in COALESCED_TYPES:
        return Group(applied=own, coalesced=[])
    async with db.transaction() as s:
        found = await waiting_repo.updated_siblings(
            s, grant_id=key[0], object_id=key[1], event_id=event.id, limit=MAX_SIBLINGS
        )
    taken, rows = await absorbed.absorb(
        db,
        leader=event,
        ids=[r.id for r in found],
        lease_s=lease_s,
        count_attempt=False,
        statuses=(EventStatus.received, EventStatus.queued, EventStatus.retrying),
    )
    if taken is None:
        return Group(applied=own, coalesced=[])
    # Newest state: Nylas `time` first (it is the message's version), then arrival order.
    candidates = [(_version(event.payload), event.received_at, own)] + [
        (
            _version(r["payload"]),
            r["received_at"],
            Notification(id=r["id"], type=r["type"], payload=r["payload"]),
        )
        for r in rows
    ]
    newest = max(candidates, key=lambda c: (c[0], c[1]))[2]
    return Group(applied=newest, coalesced=list(taken.ids), absorbed_at=taken.absorbed_at)


async def finish_group(
    session: AsyncSession,
    group: Group,
    *,
    event: Event,
    tenant_id: uuid.UUID | None,
    account_id: uuid.UUID | None,
) -> None:
    """End the siblings `coalesced` into `event`, in the transaction of the work it did; one
    taken over meanwhile (its lease ran out) is left to the run that took it."""
    if not group.coalesced or group.absorbed_at is None:
        return
    held = await lifecycle.still_absorbed(
        session, ids=group.coalesced, absorbed_at=group.absorbed_at
    )
    group.coalesced = [i for i in group.coalesced if i in held]
    await lifecycle.finish_coalesced(
        session,
        ids=group.coalesced,
        into=event.id,
        absorbed_at=group.absorbed_at,
        tenant_id=tenant_id,
        account_id=account_id,
    )


def annotate(result: dict[str, Any], group: Group) -> dict[str, Any]:
    """The worker's result says how many notifications its work stood for, and whose state."""
    if not group.coalesced:
        return result
    return {
        **result,
        "coalesced": len(group.coalesced),
        "applied_event_id": str(group.applied.id),
    }
