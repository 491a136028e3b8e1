"""Tenants and their users (the admin CLI writes them; the API only reads them)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Tenant, User

_t = Tenant.__table__  # type: ignore[attr-defined]
_u = User.__table__  # type: ignore[attr-defined]


async def create_tenant(session: AsyncSession, name: str) -> uuid.UUID | None:
    """Insert a tenant; None when the name is taken."""
    stmt = (
        insert(_t)
        .values(id=uuid.uuid4(), name=name)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_tenant_by_name(session: AsyncSession, name: str) -> Tenant | None:
    return (await session.execute(sa.select(Tenant).where(_t.c.name == name))).scalar_one_or_none()


async def create_user(session: AsyncSession, tenant_id: uuid.UUID, email: str) -> uuid.UUID | None:
    """Insert a user in the tenant; None when the email is already there."""
    stmt = (
        insert(_u)
        .values(id=uuid.uuid4(), tenant_id=tenant_id, email=email)
        .on_conflict_do_nothing(index_elements=["tenant_id", "email"])
        .returning(_u.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_user_by_email(session: AsyncSession, tenant_id: uuid.UUID, email: str) -> User | None:
    stmt = sa.select(User).where(_u.c.tenant_id == tenant_id, _u.c.email == email)
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_weight(session: AsyncSession, tenant_id: uuid.UUID, weight: int) -> None:
    await session.execute(sa.update(_t).where(_t.c.id == tenant_id).values(weight=weight))


async def weights(session: AsyncSession) -> dict[str, int]:
    """Every tenant whose weight is not 1: what publishers read (worker.dispatch.WEIGHTS_KEY)."""
    rows = await session.execute(sa.select(_t.c.id, _t.c.weight).where(_t.c.weight != 1))
    return {str(tenant_id): int(weight) for tenant_id, weight in rows}
