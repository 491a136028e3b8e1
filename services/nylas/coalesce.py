"""Coalescing repeated `message.updated` notifications about one message (issue 12, storms).

Nylas may send many `message.updated` notifications for one message within seconds (a user
flagging, moving, reading). Each is stored on arrival as its own event, so each is
acknowledged and accounted for. The work is coalesced at processing time: the worker that
claims one of them also locks the other notifications about the same grant and message that
no worker has taken yet, applies the newest stored state (the highest Nylas `time`, then the
latest arrival) and ends the others `coalesced`, naming the event that did the work, in the
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
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventSource
from database.repositories.events import batch as waiting_repo
from database.repositories.events import lifecycle
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


async def take_group(session: AsyncSession, event: Event) -> Group:
    """The notification to apply for `event` and the waiting siblings it stands for."""
    own = Notification(id=event.id, type=event.type, payload=event.payload)
    key = _key(event.payload) if event.source == EventSource.nylas else None
    if key is None or base_type(event.type) not in COALESCED_TYPES:
        return Group(applied=own, coalesced=[])
    rows = await waiting_repo.take_updated_siblings(
        session, grant_id=key[0], object_id=key[1], event_id=event.id, limit=MAX_SIBLINGS
    )
    if not rows:
        return Group(applied=own, coalesced=[])
    # Newest state: Nylas `time` first (it is the message's version), then arrival order.
    candidates = [(_version(event.payload), event.received_at, own)] + [
        (_version(r.payload), r.received_at, Notification(id=r.id, type=r.type, payload=r.payload))
        for r in rows
    ]
    newest = max(candidates, key=lambda c: (c[0], c[1]))[2]
    return Group(applied=newest, coalesced=[r.id for r in rows])


async def finish_group(
    session: AsyncSession,
    group: Group,
    *,
    event: Event,
    tenant_id: uuid.UUID | None,
    account_id: uuid.UUID | None,
) -> None:
    """End the siblings `coalesced` into `event`, in the transaction of the work it did."""
    if not group.coalesced:
        return
    await lifecycle.finish_coalesced(
        session, ids=group.coalesced, into=event.id, tenant_id=tenant_id, account_id=account_id
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
