"""Per-account rules, always read and changed through the tenant."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from database.models import Message, Rule


async def list_for_account(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    enabled_only: bool = False,
) -> list[Rule]:
    stmt = sa.select(Rule).where(
        col(Rule.tenant_id) == tenant_id, col(Rule.account_id) == account_id
    )
    if enabled_only:
        stmt = stmt.where(col(Rule.enabled).is_(True))
    stmt = stmt.order_by(col(Rule.position), col(Rule.created_at))
    return list((await session.execute(stmt)).scalars())


async def get(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, rule_id: uuid.UUID
) -> Rule | None:
    stmt = sa.select(Rule).where(
        col(Rule.id) == rule_id,
        col(Rule.tenant_id) == tenant_id,
        col(Rule.account_id) == account_id,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def add(session: AsyncSession, rule: Rule) -> Rule:
    session.add(rule)
    await session.flush()
    return rule


async def update(session: AsyncSession, rule: Rule, values: dict[str, Any]) -> Rule:
    for key, value in values.items():
        setattr(rule, key, value)
    rule.updated_at = sa.func.now()  # type: ignore[assignment]
    await session.flush()
    await session.refresh(rule)
    return rule


async def delete(session: AsyncSession, rule: Rule) -> None:
    await session.delete(rule)
    await session.flush()


async def spam_messages_outside(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    folder_id: uuid.UUID,
    limit: int = 500,
) -> list[uuid.UUID]:
    """Ids of live spam messages of the account not yet in the given folder."""
    stmt = (
        sa.select(col(Message.id))
        .where(
            col(Message.tenant_id) == tenant_id,
            col(Message.account_id) == account_id,
            col(Message.is_spam).is_(True),
            col(Message.deleted_at).is_(None),
            sa.or_(col(Message.folder_id).is_(None), col(Message.folder_id) != folder_id),
        )
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def unclassified(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, limit: int = 2000
) -> list[uuid.UUID]:
    """Ids of live messages of the account that have no verdict yet, newest first."""
    stmt = (
        sa.select(col(Message.id))
        .where(
            col(Message.tenant_id) == tenant_id,
            col(Message.account_id) == account_id,
            col(Message.is_spam).is_(None),
            col(Message.deleted_at).is_(None),
        )
        .order_by(col(Message.sort_at).desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
