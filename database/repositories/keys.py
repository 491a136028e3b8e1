"""API keys, stored as the sha256 of the key; looked up by that hash."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import ApiKey, User

_k = ApiKey.__table__  # type: ignore[attr-defined]
_u = User.__table__  # type: ignore[attr-defined]
_now = sa.func.now()


@dataclass(frozen=True)
class KeyRow:
    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def create(
    session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID, key_hash: str, prefix: str
) -> uuid.UUID:
    stmt = (
        sa.insert(_k)
        .values(
            id=uuid.uuid4(), tenant_id=tenant_id, user_id=user_id, key_hash=key_hash, prefix=prefix
        )
        .returning(_k.c.id)
    )
    return (await session.execute(stmt)).scalar_one()  # type: ignore[no-any-return]


def _row(r: Any) -> KeyRow:
    return KeyRow(
        id=r.id,
        tenant_id=r.tenant_id,
        user_id=r.user_id,
        email=r.email,
        created_at=r.created_at,
        last_used_at=r.last_used_at,
        revoked_at=r.revoked_at,
    )


def _select() -> sa.Select[tuple[object, ...]]:
    return sa.select(
        _k.c.id,
        _k.c.tenant_id,
        _k.c.user_id,
        _u.c.email,
        _k.c.created_at,
        _k.c.last_used_at,
        _k.c.revoked_at,
    ).join(_u, _u.c.id == _k.c.user_id)


async def find_by_hash(session: AsyncSession, key_hash: str) -> KeyRow | None:
    row = (await session.execute(_select().where(_k.c.key_hash == key_hash))).one_or_none()
    return _row(row) if row is not None else None


async def list_for_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> list[KeyRow]:
    stmt = _select().where(_k.c.tenant_id == tenant_id).order_by(_k.c.created_at, _k.c.id)
    return [_row(r) for r in (await session.execute(stmt)).all()]


async def revoke(session: AsyncSession, key_id: uuid.UUID) -> bool | None:
    """Revoke; True when revoked now, False when it already was, None when no such key."""
    stmt = (
        sa.update(_k)
        .where(_k.c.id == key_id, _k.c.revoked_at.is_(None))
        .values(revoked_at=_now)
        .returning(_k.c.id)
    )
    if (await session.execute(stmt)).scalar_one_or_none() is not None:
        return True
    exists = (
        await session.execute(sa.select(_k.c.id).where(_k.c.id == key_id))
    ).scalar_one_or_none()
    return False if exists is not None else None


async def touch(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Record use, at most once a minute per key so busy clients do not write on every call."""
    await session.execute(
        sa.update(_k)
        .where(
            _k.c.id == key_id,
            sa.or_(
                _k.c.last_used_at.is_(None),
                _k.c.last_used_at < _now - sa.text("interval '60 seconds'"),
            ),
        )
        .values(last_used_at=_now)
    )
