"""Accounts and their credentials, always read through the tenant (or the Nylas grant)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, AccountStatus, Credential, Provider

_a = Account.__table__  # type: ignore[attr-defined]
_c = Credential.__table__  # type: ignore[attr-defined]


async def get_live_by_grant(session: AsyncSession, grant_id: str) -> Account | None:
    stmt = sa.select(Account).where(
        _a.c.grant_id == grant_id,
        _a.c.provider == Provider.nylas,
        _a.c.deleted_at.is_(None),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_for_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account | None:
    stmt = sa.select(Account).where(
        _a.c.id == account_id,
        _a.c.tenant_id == tenant_id,
        _a.c.deleted_at.is_(None),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def credential_ciphertext(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> str | None:
    """The encrypted credential blob of the tenant's account (decrypted by services.crypto
    only). The one read of it: sync, send, delete, push and account changes all come here."""
    stmt = sa.select(_c.c.ciphertext).where(
        _c.c.account_id == account_id, _c.c.tenant_id == tenant_id
    )
    token = (await session.execute(stmt)).scalar_one_or_none()
    return str(token) if token is not None else None


async def set_status(
    session: AsyncSession, account_id: uuid.UUID, status: AccountStatus, reason: str | None
) -> None:
    await session.execute(
        sa.update(Account)
        .where(Account.id == account_id)  # type: ignore[arg-type]
        .values(status=status, status_reason=reason, updated_at=sa.func.now())
    )


async def get_live_by_email(
    session: AsyncSession, tenant_id: uuid.UUID, email: str, provider: str
) -> Account | None:
    """The tenant's live account of that provider and address (the hosted OAuth flow's
    reconnect); the newest one when there are several."""
    stmt = (
        sa.select(Account)
        .where(
            _a.c.tenant_id == tenant_id,
            sa.func.lower(_a.c.email) == email.lower(),
            _a.c.provider == provider,
            _a.c.deleted_at.is_(None),
        )
        .order_by(_a.c.created_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def synced_credentials(
    session: AsyncSession, tenant_id: uuid.UUID, *, limit: int = 500
) -> list[str]:
    """Ciphertexts of the tenant's live IMAP and POP3 accounts that have synced at least once."""
    stmt = (
        sa.select(_c.c.ciphertext)
        .join(_a, _a.c.id == _c.c.account_id)
        .where(
            _a.c.tenant_id == tenant_id,
            _c.c.tenant_id == tenant_id,
            _a.c.deleted_at.is_(None),
            _a.c.last_sync_at.is_not(None),
            _a.c.provider.in_([Provider.imap, Provider.pop3]),
        )
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
