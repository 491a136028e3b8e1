"""Uploads that come with a send request, stored until the send task reads them."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OutboundAttachment

_t = OutboundAttachment.__table__  # type: ignore[attr-defined]


async def add_many(
    session: AsyncSession, *, tenant_id: uuid.UUID, event_id: uuid.UUID, files: list[dict[str, Any]]
) -> None:
    """Insert files given as {id, filename, content_type, content}."""
    if files:
        await session.execute(
            sa.insert(_t),
            [
                {"tenant_id": tenant_id, "event_id": event_id, "size": len(f["content"]), **f}
                for f in files
            ],
        )


async def get_many(
    session: AsyncSession, tenant_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[OutboundAttachment]:
    """The tenant's uploads with these ids, in the order asked."""
    stmt = sa.select(OutboundAttachment).where(_t.c.tenant_id == tenant_id, _t.c.id.in_(ids))
    found = {a.id: a for a in (await session.execute(stmt)).scalars()}
    return [found[i] for i in ids if i in found]
