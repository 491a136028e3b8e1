"""Writing tenant events: one INSERT in the caller's transaction, numbered later."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import TenantEvent

_te = TenantEvent.__table__  # type: ignore[attr-defined]


async def insert_events(
    session: AsyncSession, tenant_id: uuid.UUID, events: list[tuple[str, dict[str, Any]]]
) -> list[uuid.UUID]:
    """Insert (type, data) pairs for one tenant; `seq` stays null until the sequencer runs."""
    if not events:
        return []
    ids = [uuid.uuid4() for _ in events]
    rows = [
        {"id": i, "tenant_id": tenant_id, "type": kind, "data": data}
        for i, (kind, data) in zip(ids, events, strict=True)
    ]
    await session.execute(sa.insert(_te), rows)
    return ids
