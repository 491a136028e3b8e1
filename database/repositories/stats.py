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
