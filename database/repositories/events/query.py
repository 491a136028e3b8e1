"""Reading a tenant's events for the API, newest first (ix_event_tenant_received)."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event

_t = Event.__table__  # type: ignore[attr-defined]


async def list_page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    status: str | None,
    type: str | None,
    source: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Event]:
    stmt = sa.select(Event).where(_t.c.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(_t.c.status == status)
    if type is not None:
        stmt = stmt.where(_t.c.type == type)
    if source is not None:
        stmt = stmt.where(_t.c.source == source)
    if after is not None:
        stmt = stmt.where(sa.tuple_(_t.c.received_at, _t.c.id) < sa.tuple_(*after))
    stmt = stmt.order_by(_t.c.received_at.desc(), _t.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())
