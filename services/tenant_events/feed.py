"""The pull side of tenant events: the sequencer's numbering and `GET /v1/feed`.

Events get their `seq` after they commit (database/repositories/tenant_events/sequence.py),
so a reader sees a gap-free prefix of each tenant's events: paging with `after` never skips
one, whatever order their transactions committed in."""

from __future__ import annotations

import uuid
from typing import Any

from database.engine import Database
from database.repositories.tenant_events import feed as feed_repo
from database.repositories.tenant_events import sequence
from services.tenant_events.envelope import envelope

MAX_LIMIT = 500


async def number_pending(db: Database, *, limit: int = 5000) -> dict[uuid.UUID, int]:
    """Number what has committed unnumbered, in a transaction of its own (it holds the
    sequencer's lock until it commits); each touched tenant's highest seq. The delivery
    process calls it periodically, the feed before it reads."""
    async with db.transaction() as s:
        if not await feed_repo.any_unnumbered(s):
            return {}
        return await sequence.number_pending(s, limit=limit)


async def read_feed(
    db: Database, *, tenant_id: uuid.UUID, after: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The tenant's events after `after` in seq order, numbered up to now first; and the
    `after` to ask with next (the last seq given, else `after` itself)."""
    await number_pending(db)
    async with db.transaction() as s:
        rows = await feed_repo.page_after(
            s, tenant_id=tenant_id, after=after, limit=min(limit, MAX_LIMIT)
        )
    items = [envelope(r) for r in rows]
    return items, (items[-1]["seq"] if items else after)
