"""Account create/list/update/soft delete, credentials and folder counts, always tenant-scoped."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Credential, Folder, Message

_a = Account.__table__  # type: ignore[attr-defined]
_c = Credential.__table__  # type: ignore[attr-defined]
_f = Folder.__table__  # type: ignore[attr-defined]
_m = Message.__table__  # type: ignore[attr-defined]
_now = sa.func.now()


async def create(session: AsyncSession, values: dict[str, Any]) -> Account:
    """Insert an account; raises IntegrityError when its Nylas grant is already live."""
    account = Account(**values)
    session.add(account)
    await session.flush()
    return account


async def list_live(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Account]:
    """Live accounts, newest first, keyset by (created_at, id)."""
    stmt = sa.select(Account).where(_a.c.tenant_id == tenant_id, _a.c.deleted_at.is_(None))
    if after is not None:
        stmt = stmt.where(sa.tuple_(_a.c.created_at, _a.c.id) < sa.tuple_(*after))
    stmt = stmt.order_by(_a.c.created_at.desc(), _a.c.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def update(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID, values: dict[str, Any]
) -> bool:
    stmt = (
        sa.update(_a)
        .where(_a.c.id == account_id, _a.c.tenant_id == tenant_id, _a.c.deleted_at.is_(None))
        .values(**values, updated_at=_now)
        .returning(_a.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def soft_delete(session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    """Mark deleted and disabled; its messages stop being listed (listing joins live accounts)."""
    return await update(session, tenant_id, account_id, {"deleted_at": _now, "status": "disabled"})


async def put_credential(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, ciphertext: str
) -> None:
    stmt = insert(_c).values(
        id=uuid.uuid4(), tenant_id=tenant_id, account_id=account_id, ciphertext=ciphertext
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id"],
        set_={"ciphertext": stmt.excluded.ciphertext, "updated_at": _now},
    )
    await session.execute(stmt)


async def all_credentials(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """Every credential (id, ciphertext), locked for a re-encryption pass."""
    stmt = sa.select(_c.c.id, _c.c.ciphertext).order_by(_c.c.id).with_for_update()
    return [(r.id, r.ciphertext) for r in (await session.execute(stmt)).all()]


async def set_ciphertext(session: AsyncSession, credential_id: uuid.UUID, ciphertext: str) -> None:
    await session.execute(
        sa.update(_c).where(_c.c.id == credential_id).values(ciphertext=ciphertext, updated_at=_now)
    )


async def folders_with_counts(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> list[tuple[uuid.UUID, str, str | None, int]]:
    """(id, name, role, live message count) of the account's folders, by name."""
    counts = (
        sa.select(_m.c.folder_id, sa.func.count().label("n"))
        .where(_m.c.account_id == account_id, _m.c.deleted_at.is_(None))
        .group_by(_m.c.folder_id)
        .subquery()
    )
    stmt = (
        sa.select(_f.c.id, _f.c.name, _f.c.role, sa.func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.folder_id == _f.c.id)
        .where(_f.c.account_id == account_id, _f.c.tenant_id == tenant_id)
        .order_by(_f.c.name)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in (await session.execute(stmt)).all()]
