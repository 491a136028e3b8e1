"""Reading numbered tenant events in `seq` order (the feed and deliveries)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import TenantEvent

_te = TenantEvent.__table__  # type: ignore[attr-defined]


async def page_after(
    session: AsyncSession, *, tenant_id: uuid.UUID, after: int, limit: int
) -> list[sa.RowMapping]:
    """The tenant's numbered events after `after`, in seq order (its unique index)."""
    stmt = (
        sa.select(_te.c.id, _te.c.type, _te.c.created_at, _te.c.seq, _te.c.data)
        .where(_te.c.tenant_id == tenant_id, _te.c.seq > after)
        .order_by(_te.c.seq)
        .limit(limit)
    )
    return list((await session.execute(stmt)).mappings())


async def any_unnumbered(session: AsyncSession, tenant_id: uuid.UUID | None = None) -> bool:
    """Whether any committed event (of the tenant, if given) waits for the sequencer: one
    index probe, so a reader takes the sequencer's lock only when needed."""
    where = [_te.c.seq.is_(None)]
    if tenant_id is not None:
        where.append(_te.c.tenant_id == tenant_id)
    stmt = sa.select(sa.exists().where(*where))
    return bool((await session.execute(stmt)).scalar_one())
