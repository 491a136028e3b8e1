"""The per-tenant suppression list: addresses sends leave out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Suppression

_s = Suppression.__table__  # type: ignore[attr-defined]


async def add(
    session: AsyncSession, *, tenant_id: uuid.UUID, rows: Sequence[dict[str, Any]]
) -> list[str]:
    """Add `{"email", "reason", "report_id"}` rows; an address already listed keeps its entry.
    The addresses newly added."""
    if not rows:
        return []
    values = [{**r, "tenant_id": tenant_id} for r in rows]
    stmt = (
        insert(_s)
        .values(values)
        .on_conflict_do_nothing(index_elements=["tenant_id", "email"])
        .returning(_s.c.email)
    )
    return [r.email for r in (await session.execute(stmt)).all()]


async def get(session: AsyncSession, *, tenant_id: uuid.UUID, email: str) -> sa.RowMapping | None:
    stmt = sa.select(_s).where(_s.c.tenant_id == tenant_id, _s.c.email == email)
    return (await session.execute(stmt)).mappings().one_or_none()


async def remove(session: AsyncSession, *, tenant_id: uuid.UUID, email: str) -> bool:
    stmt = sa.delete(_s).where(_s.c.tenant_id == tenant_id, _s.c.email == email)
    return bool((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]


async def page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[sa.RowMapping]:
    """Newest first on (created_at, email), served by ix_suppression_tenant_created."""
    stmt = sa.select(_s).where(_s.c.tenant_id == tenant_id)
    if after is not None:
        stmt = stmt.where(sa.tuple_(_s.c.created_at, _s.c.email) < sa.tuple_(*after))
    stmt = stmt.order_by(_s.c.created_at.desc(), _s.c.email.desc()).limit(limit)
    return list((await session.execute(stmt)).mappings())


async def among(session: AsyncSession, *, tenant_id: uuid.UUID, emails: Sequence[str]) -> set[str]:
    """Which of these (lowercased) addresses the tenant suppresses."""
    if not emails:
        return set()
    stmt = sa.select(_s.c.email).where(_s.c.tenant_id == tenant_id, _s.c.email.in_(list(emails)))
    return {r.email for r in (await session.execute(stmt)).all()}
