"""oauth_state rows: one per hosted-flow authorization, consumed once by the callback."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OAuthState

_t = OAuthState.__table__  # type: ignore[attr-defined]


async def create(
    session: AsyncSession,
    *,
    state_id: uuid.UUID,
    tenant_id: uuid.UUID,
    app_id: uuid.UUID,
    user_id: uuid.UUID,
    redirect_to: str,
    login_hint: str | None,
    expires_at: datetime,
) -> None:
    await session.execute(
        sa.insert(_t).values(
            id=state_id,
            tenant_id=tenant_id,
            app_id=app_id,
            user_id=user_id,
            redirect_to=redirect_to,
            login_hint=login_hint,
            expires_at=expires_at,
        )
    )


async def consume(
    session: AsyncSession, *, state_id: uuid.UUID, tenant_id: uuid.UUID, app_id: uuid.UUID
) -> OAuthState | None:
    """Mark the state used, once: None when it is unknown, used already or expired.

    One UPDATE ... WHERE used_at IS NULL: two callbacks with the same state race on the row
    lock, and the second finds it used.
    """
    stmt = (
        sa.update(_t)
        .where(
            _t.c.id == state_id,
            _t.c.tenant_id == tenant_id,
            _t.c.app_id == app_id,
            _t.c.used_at.is_(None),
            _t.c.expires_at > sa.func.now(),
        )
        .values(used_at=sa.func.now())
        .returning(*_t.c)
    )
    row = (await session.execute(stmt)).mappings().one_or_none()
    return OAuthState(**row) if row is not None else None


async def purge_expired(session: AsyncSession, *, before: datetime) -> int:
    result = await session.execute(sa.delete(_t).where(_t.c.expires_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
