"""Counts that per-tenant caps are checked against, under a lock that serialises the check."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, OutboundAttachment, Rule, SendDraft, Template, Tenant

_a = Account.__table__  # type: ignore[attr-defined]
_t = Tenant.__table__  # type: ignore[attr-defined]
_rule = Rule.__table__  # type: ignore[attr-defined]
_template = Template.__table__  # type: ignore[attr-defined]
_draft = SendDraft.__table__  # type: ignore[attr-defined]
_upload = OutboundAttachment.__table__  # type: ignore[attr-defined]


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


async def _count_upto(session: AsyncSession, where: sa.Select[Any], upto: int) -> int:
    capped = where.limit(upto).subquery()
    return int((await session.execute(sa.select(sa.func.count()).select_from(capped))).scalar_one())


async def count_rules(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID, *, upto: int
) -> int:
    """The account's rules, counted no further than `upto`."""
    where = sa.select(sa.literal(1)).where(
        _rule.c.tenant_id == tenant_id, _rule.c.account_id == account_id
    )
    return await _count_upto(session, where, upto)


async def count_templates(session: AsyncSession, tenant_id: uuid.UUID, *, upto: int) -> int:
    """The tenant's templates, counted no further than `upto`."""
    where = sa.select(sa.literal(1)).where(_template.c.tenant_id == tenant_id)
    return await _count_upto(session, where, upto)


async def template_exists(session: AsyncSession, tenant_id: uuid.UUID, name: str) -> bool:
    stmt = sa.select(_template.c.id).where(
        _template.c.tenant_id == tenant_id, _template.c.name == name
    )
    return (await session.execute(stmt)).first() is not None


async def stored_bytes(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """Bytes of the tenant's drafts (scheduled sends included) and uploads: two index-only
    sums over (tenant_id, size)."""
    drafts = sa.select(sa.func.coalesce(sa.func.sum(_draft.c.size), 0)).where(
        _draft.c.tenant_id == tenant_id
    )
    uploads = sa.select(sa.func.coalesce(sa.func.sum(_upload.c.size), 0)).where(
        _upload.c.tenant_id == tenant_id
    )
    row = (
        await session.execute(sa.select(drafts.scalar_subquery(), uploads.scalar_subquery()))
    ).one()
    return int(row[0]) + int(row[1])
