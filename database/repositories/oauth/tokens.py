"""oauth_token rows: an account's encrypted tokens, their expiry and the refresh lease.

Every function here is one short statement; the refresh (services/oauth/refresh.py) calls
them in transactions of their own around the token endpoint call, never across it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OAuthToken

_t = OAuthToken.__table__  # type: ignore[attr-defined]
_now = sa.func.now()


async def put(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    app_id: uuid.UUID,
    ciphertext: str,
    expires_at: datetime | None,
) -> None:
    """A new grant for the account (create, or a new consent in the hosted flow)."""
    stmt = insert(_t).values(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        account_id=account_id,
        app_id=app_id,
        ciphertext=ciphertext,
        expires_at=expires_at,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[_t.c.account_id],
        set_={
            "app_id": app_id,
            "ciphertext": ciphertext,
            "expires_at": expires_at,
            "generation": _t.c.generation + 1,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": _now,
        },
    )
    await session.execute(stmt)


async def read(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, lock: bool = False
) -> OAuthToken | None:
    """The grant row; with `lock`, FOR UPDATE (the caller's transaction must be short)."""
    stmt = sa.select(OAuthToken).where(_t.c.account_id == account_id, _t.c.tenant_id == tenant_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (
        await session.execute(stmt.execution_options(populate_existing=True))
    ).scalar_one_or_none()
    return row


async def db_now(session: AsyncSession) -> datetime:
    """The database's clock: leases from several hosts are compared on one clock."""
    return (await session.execute(sa.select(_now))).scalar_one()  # type: ignore[no-any-return]


async def take_lease(
    session: AsyncSession, *, account_id: uuid.UUID, owner: uuid.UUID, lease_s: float
) -> None:
    await session.execute(
        sa.update(_t)
        .where(_t.c.account_id == account_id)
        .values(lease_owner=owner, lease_until=_now + sa.text(f"interval '{float(lease_s)} s'"))
    )


async def store_refresh(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    owner: uuid.UUID,
    ciphertext: str,
    expires_at: datetime | None,
) -> int | None:
    """Record a refresh made under `owner`'s lease; the new generation, or None when the
    lease was no longer ours (then nothing is written)."""
    stmt = (
        sa.update(_t)
        .where(_t.c.account_id == account_id, _t.c.lease_owner == owner)
        .values(
            ciphertext=ciphertext,
            expires_at=expires_at,
            generation=_t.c.generation + 1,
            lease_owner=None,
            lease_until=None,
            refreshed_at=_now,
            updated_at=_now,
        )
        .returning(_t.c.generation)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def release(session: AsyncSession, *, account_id: uuid.UUID, owner: uuid.UUID) -> None:
    """Give the lease back without a new token (the endpoint failed)."""
    await session.execute(
        sa.update(_t)
        .where(_t.c.account_id == account_id, _t.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


async def all_ciphertexts(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """Every grant's (id, ciphertext), locked for a re-encryption pass."""
    stmt = sa.select(_t.c.id, _t.c.ciphertext).order_by(_t.c.id).with_for_update()
    return [(r.id, r.ciphertext) for r in (await session.execute(stmt)).all()]


async def set_ciphertext(session: AsyncSession, row_id: uuid.UUID, ciphertext: str) -> None:
    await session.execute(sa.update(_t).where(_t.c.id == row_id).values(ciphertext=ciphertext))
