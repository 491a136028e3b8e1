"""Counts that per-tenant caps are checked against, under a lock that serialises the check."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Tenant

_a = Account.__table__  # type: ignore[attr-defined]
_t = Tenant.__table__  # type: ignore[attr-defined]


async def lock_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Hold the tenant row until the transaction ends, so cap checks of one tenant take turns.

    FOR NO KEY UPDATE conflicts with itself but not with the FOR KEY SHARE that inserting a
    row referencing the tenant takes: other writes of the tenant do not wait for it.
    """
    await session.execute(
        sa.select(_t.c.id).where(_t.c.id == tenant_id).with_for_update(key_share=True)
    )


async def count_live_accounts(session: AsyncSession, tenant_id: uuid.UUID, *, upto: int) -> int:
    """Live accounts of the tenant, counted no further than `upto` (all a cap needs to know)."""
    live = (
        sa.select(sa.literal(1))
        .where(_a.c.tenant_id == tenant_id, _a.c.deleted_at.is_(None))
        .limit(upto)
        .subquery()
    )
    return int((await session.execute(sa.select(sa.func.count()).select_from(live))).scalar_one())
