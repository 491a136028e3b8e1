"""Dead letters: what failed for good, kept for people to inspect and replay."""

from __future__ import annotations

import uuid
from datetime import datetime
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
                sa.select(_d.c.id)
                .where(
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
                # The event's attempt counter already spans every run (replays included):
                # adding it to the old figure would count the first run twice.
                attempts=values.get("attempts", 0),
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


def _scoped(stmt: Any, tenant_id: uuid.UUID | None, task: str | None) -> Any:
    """Tenant filter (None = every tenant: the operator's CLI) and optional task filter."""
    if tenant_id is not None:
        stmt = stmt.where(_d.c.tenant_id == tenant_id)
    if task:
        stmt = stmt.where(_d.c.task_name == task)
    return stmt


async def page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID | None,
    limit: int,
    task: str | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[DeadLetter]:
    """Newest first by (created_at, id); `after` is the last row of the previous page."""
    stmt = _scoped(sa.select(DeadLetter), tenant_id, task)
    if after is not None:
        stmt = stmt.where(sa.tuple_(_d.c.created_at, _d.c.id) < sa.tuple_(*after))
    stmt = stmt.order_by(_d.c.created_at.desc(), _d.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def get(
    session: AsyncSession, dead_letter_id: uuid.UUID, *, tenant_id: uuid.UUID | None
) -> DeadLetter | None:
    stmt = _scoped(sa.select(DeadLetter).where(_d.c.id == dead_letter_id), tenant_id, None)
    return (await session.execute(stmt.with_for_update())).scalar_one_or_none()


async def ids(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID | None,
    task: str | None = None,
    unreplayed: bool = True,
) -> list[uuid.UUID]:
    """Ids for bulk work (replay --all, purge), oldest first."""
    stmt = _scoped(sa.select(_d.c.id), tenant_id, task)
    if unreplayed:
        stmt = stmt.where(_d.c.replayed_at.is_(None))
    stmt = stmt.order_by(_d.c.created_at, _d.c.id)
    return list((await session.execute(stmt)).scalars())


async def mark_replayed(session: AsyncSession, dead_letter_id: uuid.UUID) -> None:
    await session.execute(
        sa.update(_d)
        .where(_d.c.id == dead_letter_id)
        .values(replayed_at=sa.func.now(), replay_count=_d.c.replay_count + 1)
    )


async def delete(
    session: AsyncSession, dead_letter_id: uuid.UUID, *, tenant_id: uuid.UUID | None
) -> bool:
    stmt = _scoped(sa.delete(_d).where(_d.c.id == dead_letter_id), tenant_id, None)
    return (await session.execute(stmt.returning(_d.c.id))).scalar_one_or_none() is not None


async def purge(session: AsyncSession, *, tenant_id: uuid.UUID | None, task: str | None) -> int:
    stmt = _scoped(sa.delete(_d), tenant_id, task)
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
