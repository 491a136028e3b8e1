"""Per-account rules, always read and changed through the tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from database.models import Message, Rule


class RuleTerms(NamedTuple):
    """What applying a rule needs, and nothing else of its row."""

    id: uuid.UUID
    condition: dict[str, Any]
    action: dict[str, Any]


# A rule's condition and action, stored, are a few hundred bytes (services/classify/rules.py
# bounds every string). A larger one was stored before the bounds: it is never loaded into a
# worker, which reads the rules of an account once per new message.
MAX_STORED_RULE_BYTES = 8192


async def enabled_terms(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, limit: int = 1000
) -> list[RuleTerms]:
    """The account's enabled rules in the order they apply: id, condition and action only."""
    stored = sa.func.pg_column_size(col(Rule.condition)) + sa.func.pg_column_size(col(Rule.action))
    stmt = (
        sa.select(col(Rule.id), col(Rule.condition), col(Rule.action))
        .where(
            col(Rule.tenant_id) == tenant_id,
            col(Rule.account_id) == account_id,
            col(Rule.enabled).is_(True),
            stored <= MAX_STORED_RULE_BYTES,
        )
        .order_by(col(Rule.position), col(Rule.created_at), col(Rule.id))
        .limit(limit)
    )
    return [RuleTerms(*row) for row in (await session.execute(stmt)).all()]


async def list_page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    after: tuple[int, datetime, uuid.UUID] | None,
    limit: int,
) -> list[Rule]:
    """The account's rules in the order they apply, by the (position, created_at, id) keyset."""
    stmt = sa.select(Rule).where(
        col(Rule.tenant_id) == tenant_id, col(Rule.account_id) == account_id
    )
    if after is not None:
        key = sa.tuple_(col(Rule.position), col(Rule.created_at), col(Rule.id))
        stmt = stmt.where(key > sa.tuple_(*after))
    stmt = stmt.order_by(col(Rule.position), col(Rule.created_at), col(Rule.id)).limit(limit)
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
