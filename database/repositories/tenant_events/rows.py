"""Writing tenant events: one INSERT in the caller's transaction, numbered later."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import TenantEvent

_te = TenantEvent.__table__  # type: ignore[attr-defined]


async def insert_events(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    events: list[tuple[str, dict[str, Any]]],
    *,
    ids: list[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Insert (type, data) pairs for one tenant; `seq` stays null until the sequencer runs.

    With `ids` (stable ids an effect derives from itself), an id already stored is left as it
    is: an effect whose bookkeeping runs again tells its event once."""
    if not events:
        return []
    ids = ids or [uuid.uuid4() for _ in events]
    rows = [
        {"id": i, "tenant_id": tenant_id, "type": kind, "data": data}
        for i, (kind, data) in zip(ids, events, strict=True)
    ]
    await session.execute(insert(_te).on_conflict_do_nothing(index_elements=["id"]), rows)
    return ids
