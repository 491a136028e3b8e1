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


async def number_pending(
    db: Database, *, limit: int = 5000, tenant_id: uuid.UUID | None = None
) -> dict[uuid.UUID, int]:
    """Number what has committed unnumbered (of one tenant, if given), in a transaction of
    its own (it holds the sequencer's lock until it commits); each touched tenant's highest
    seq. The delivery process calls it periodically, the feed before it reads."""
    async with db.transaction() as s:
        if not await feed_repo.any_unnumbered(s, tenant_id):
            return {}
        return await sequence.number_pending(s, limit=limit, tenant_id=tenant_id)


async def read_feed(
    db: Database, *, tenant_id: uuid.UUID, after: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The tenant's events after `after` in seq order, numbered up to now first; and the
    `after` to ask with next (the last seq given, else `after` itself)."""
    # The reader's own events only: other tenants' backlog (a deliverer that is behind or not
    # running) must not push this tenant's newest events past the numbering's limit.
    await number_pending(db, tenant_id=tenant_id)
    async with db.transaction() as s:
        rows = await feed_repo.page_after(
            s, tenant_id=tenant_id, after=after, limit=min(limit, MAX_LIMIT)
        )
    items = [envelope(r) for r in rows]
    return items, (items[-1]["seq"] if items else after)
