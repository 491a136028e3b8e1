"""oauth_app rows: always read and written through the tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OAuthApp

_t = OAuthApp.__table__  # type: ignore[attr-defined]


async def create(session: AsyncSession, values: dict[str, Any]) -> OAuthApp:
    app = OAuthApp(**values)
    session.add(app)
    await session.flush()
    return app


async def get_live(
    session: AsyncSession, tenant_id: uuid.UUID, app_id: uuid.UUID
) -> OAuthApp | None:
    stmt = sa.select(OAuthApp).where(
        _t.c.id == app_id, _t.c.tenant_id == tenant_id, _t.c.deleted_at.is_(None)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_any(
    session: AsyncSession, tenant_id: uuid.UUID, app_id: uuid.UUID
) -> OAuthApp | None:
    """Also a deleted app: accounts connected through it keep refreshing their tokens."""
    stmt = sa.select(OAuthApp).where(_t.c.id == app_id, _t.c.tenant_id == tenant_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_live(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[OAuthApp]:
    stmt = sa.select(OAuthApp).where(_t.c.tenant_id == tenant_id, _t.c.deleted_at.is_(None))
    if after is not None:
        stmt = stmt.where(sa.tuple_(_t.c.created_at, _t.c.id) < sa.tuple_(*after))
    stmt = stmt.order_by(_t.c.created_at.desc(), _t.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def soft_delete(session: AsyncSession, tenant_id: uuid.UUID, app_id: uuid.UUID) -> bool:
    stmt = (
        sa.update(_t)
        .where(_t.c.id == app_id, _t.c.tenant_id == tenant_id, _t.c.deleted_at.is_(None))
        .values(deleted_at=sa.func.now())
        .returning(_t.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def all_secrets(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """Every app's (id, secret ciphertext), locked for a re-encryption pass."""
    stmt = sa.select(_t.c.id, _t.c.secret_ciphertext).order_by(_t.c.id).with_for_update()
    return [(r.id, r.secret_ciphertext) for r in (await session.execute(stmt)).all()]


async def set_secret(session: AsyncSession, app_id: uuid.UUID, ciphertext: str) -> None:
    await session.execute(
        sa.update(_t).where(_t.c.id == app_id).values(secret_ciphertext=ciphertext)
    )
