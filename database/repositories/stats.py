"""Operator counts across tenants (metrics and /health/detailed), bounded by a short timeout."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import DeadLetter, Event

_e = Event.__table__  # type: ignore[attr-defined]
_d = DeadLetter.__table__  # type: ignore[attr-defined]


async def _limit(session: AsyncSession, timeout_ms: int) -> None:
    # A scrape must never queue behind a slow database: the server gives up on its own.
    await session.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))


async def events_by_status(session: AsyncSession, *, timeout_ms: int = 1000) -> dict[str, int]:
    await _limit(session, timeout_ms)
    rows = await session.execute(sa.select(_e.c.status, sa.func.count()).group_by(_e.c.status))
    return {str(status): int(n) for status, n in rows}


async def dead_letter_counts(session: AsyncSession, *, timeout_ms: int = 1000) -> dict[str, int]:
    """Dead letters waiting for a person ('pending') and those replayed at least once."""
    await _limit(session, timeout_ms)
    row = (
        await session.execute(
            sa.select(
                sa.func.count().filter(_d.c.replayed_at.is_(None)),
                sa.func.count().filter(_d.c.replayed_at.is_not(None)),
            )
        )
    ).one()
    return {"pending": int(row[0]), "replayed": int(row[1])}


# Work waiting for a worker, by tenant and task: queued webhooks and jobs, and a job's next
# part handed over but not started. A webhook not yet processed has no tenant: its grant's
# account says whose it is ('' when no account has that grant). Served by the partial index
# of unfinished events, so it costs the backlog, not the ledger.
_WAITING = sa.text(
    """
SELECT coalesce(e.tenant_id, a.tenant_id)::text AS tenant, e.task_name, count(*) AS depth,
       extract(epoch FROM now() - min(CASE WHEN e.status = 'processing' THEN e.updated_at
                                           ELSE e.received_at END)) AS oldest_s
FROM event e
LEFT JOIN account a ON e.tenant_id IS NULL AND e.source = 'nylas' AND a.grant_id =
     coalesce(e.payload #>> '{data,grant_id}', e.payload #>> '{data,object,grant_id}')
WHERE e.status IN ('received', 'queued', 'processing')
  AND (e.status <> 'processing' OR e.started_at IS NULL)
GROUP BY 1, 2
"""
)


async def waiting_work(
    session: AsyncSession, *, timeout_ms: int | None = 1000
) -> list[tuple[str, str, int, float]]:
    """(tenant id or '', task name, events waiting, seconds the oldest has waited).

    `timeout_ms=None`: the caller's transaction has its SET LOCAL already (one round trip less).
    """
    if timeout_ms is not None:
        await _limit(session, timeout_ms)
    rows = await session.execute(_WAITING)
    return [(r.tenant or "", r.task_name, int(r.depth), float(r.oldest_s or 0.0)) for r in rows]
