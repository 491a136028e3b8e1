"""Dead letters: what failed for good, kept for people to inspect and replay."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import DeadLetter

_d = DeadLetter.__table__  # type: ignore[attr-defined]


async def record(session: AsyncSession, **values: Any) -> uuid.UUID:
    """Insert a dead letter, or fold a repeat failure of the same event and task into it."""
    existing = None
    if values.get("event_id") is not None:
        existing = (
            await session.execute(
                sa.select(_d.c.id).where(
                    _d.c.event_id == values["event_id"],
                    _d.c.task_name == values["task_name"],
                )
                .order_by(_d.c.created_at.desc())
                .limit(1)
                .with_for_update()
            )
        ).scalar_one_or_none()
    if existing is not None:
        await session.execute(
            sa.update(_d)
            .where(_d.c.id == existing)
            .values(
                exception_type=values["exception_type"],
                exception_message=values["exception_message"],
                traceback=values.get("traceback"),
                attempts=_d.c.attempts + values.get("attempts", 0),
                last_failed_at=sa.func.now(),
                replayed_at=None,
                task_id=values.get("task_id"),
            )
        )
        return existing  # type: ignore[no-any-return]
    row_id = uuid.uuid4()
    await session.execute(sa.insert(_d).values(id=row_id, **values))
    return row_id


async def count(session: AsyncSession, tenant_id: uuid.UUID | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(_d).where(_d.c.replayed_at.is_(None))
    if tenant_id is not None:
        stmt = stmt.where(_d.c.tenant_id == tenant_id)
    return int((await session.execute(stmt)).scalar_one())
