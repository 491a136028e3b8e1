"""Reading what a tenant's application was told: its whole feed, through the feed service."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from services.tenant_events.feed import read_feed


async def feed_of(db: Any, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every event of the tenant in seq order (paged as a client pages)."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        items, after = await read_feed(db, tenant_id=tenant_id, after=after, limit=500)
        if not items:
            return out
        out.extend(items)


def kinds(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["type"] for e in events)


def about(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The messages the events of one type carry, in order."""
    return [e["data"]["message"] for e in events if e["type"] == kind]
