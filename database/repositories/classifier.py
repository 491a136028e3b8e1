"""Verdicts on messages, feedback and each tenant's fitted model: the classifier's SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from database.models import Attachment, ClassifierFeedback, Folder, Message, TenantSpamModel

_m = Message.__table__  # type: ignore[attr-defined]
_fb = ClassifierFeedback.__table__  # type: ignore[attr-defined]
_tm = TenantSpamModel.__table__  # type: ignore[attr-defined]


async def get_message(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    stmt = sa.select(Message).where(
        col(Message.id) == message_id,
        col(Message.tenant_id) == tenant_id,
        col(Message.deleted_at).is_(None),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def attachment_names(session: AsyncSession, message_id: uuid.UUID) -> list[str]:
    stmt = sa.select(col(Attachment.filename)).where(
        col(Attachment.message_id) == message_id,
        col(Attachment.filename).is_not(None),
    )
    return [str(n) for n in (await session.execute(stmt)).scalars()]


async def save_verdict(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    is_spam: bool,
    spam_score: float,
    indicators: list[str],
    category: str,
) -> None:
    await session.execute(
        sa.update(_m)
        .where(_m.c.id == message_id)
        .values(
            is_spam=is_spam,
            spam_score=spam_score,
            spam_indicators=indicators,
            category=category,
            updated_at=sa.func.now(),
        )
    )


async def model_state(session: AsyncSession, *, tenant_id: uuid.UUID) -> Any | None:
    """(changes, fitted_changes, generation, n_spam, n_ham, fitted_at) of the tenant's model."""
    stmt = sa.select(
        _tm.c.changes,
        _tm.c.fitted_changes,
        _tm.c.generation,
        _tm.c.n_spam,
        _tm.c.n_ham,
        _tm.c.fitted_at,
    ).where(_tm.c.tenant_id == tenant_id)
    return (await session.execute(stmt)).one_or_none()


async def model_blob(
    session: AsyncSession, *, tenant_id: uuid.UUID, generation: int
) -> bytes | None:
    """The fitted model of that generation, or None when it was refitted meanwhile."""
    stmt = sa.select(_tm.c.model).where(
        _tm.c.tenant_id == tenant_id, _tm.c.generation == generation
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def count_change(session: AsyncSession, *, tenant_id: uuid.UUID) -> None:
    """One more label change for the tenant: its model is stale until the next fit."""
    stmt = insert(_tm).values(tenant_id=tenant_id, changes=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id"], set_={"changes": _tm.c.changes + 1}
    )
    await session.execute(stmt)


async def labelled_examples(
    session: AsyncSession, *, tenant_id: uuid.UUID, limit: int
) -> list[Any]:
    """The tenant's newest labels that carry hashed features: (label, features, tokens)."""
    stmt = (
        sa.select(_fb.c.label, _fb.c.features, _fb.c.tokens)
        .where(_fb.c.tenant_id == tenant_id, _fb.c.features.is_not(None))
        .order_by(_fb.c.created_at.desc(), _fb.c.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).all())


async def save_fit(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    fitted_changes: int,
    n_spam: int,
    n_ham: int,
    model: bytes,
) -> tuple[int, datetime] | None:
    """Store a fitted model; its (generation, fitted_at) is what every worker caches it by.

    None when a fit that saw at least `fitted_changes` changes is stored already (two refits
    of one tenant ran at once): the newer fit stays."""
    stmt = (
        sa.update(_tm)
        .where(_tm.c.tenant_id == tenant_id, _tm.c.fitted_changes < fitted_changes)
        .values(
            fitted_changes=fitted_changes,
            generation=_tm.c.generation + 1,
            n_spam=n_spam,
            n_ham=n_ham,
            fitted_at=sa.func.now(),
            model=model,
        )
        .returning(_tm.c.generation, _tm.c.fitted_at)
    )
    row = (await session.execute(stmt)).one_or_none()
    return (int(row.generation), row.fitted_at) if row is not None else None


async def get_feedback(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> ClassifierFeedback | None:
    stmt = (
        sa.select(ClassifierFeedback)
        .where(
            col(ClassifierFeedback.tenant_id) == tenant_id,
            col(ClassifierFeedback.message_id) == message_id,
        )
        .with_for_update()
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def put_feedback(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    message_id: uuid.UUID,
    label: str,
    indicators: list[str],
    features: bytes,
) -> None:
    stmt = insert(_fb).values(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        user_id=user_id,
        message_id=message_id,
        label=label,
        tokens={"indicators": indicators},
        features=features,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "message_id"],
        set_={
            "label": label,
            "user_id": user_id,
            "tokens": {"indicators": indicators},
            "features": features,
            "created_at": sa.func.now(),
        },
    )
    await session.execute(stmt)


async def folder_by_name(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, name: str
) -> Folder | None:
    stmt = sa.select(Folder).where(
        col(Folder.tenant_id) == tenant_id,
        col(Folder.account_id) == account_id,
        col(Folder.name) == name,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def folder_by_id(session: AsyncSession, folder_id: uuid.UUID | None) -> Folder | None:
    return await session.get(Folder, folder_id) if folder_id is not None else None


async def set_message_place(
    session: AsyncSession, *, message_id: uuid.UUID, values: dict[str, Any]
) -> None:
    """Record where a rule put the message (folder_id, labels)."""
    await session.execute(
        sa.update(_m).where(_m.c.id == message_id).values(**values, updated_at=sa.func.now())
    )


async def get_messages(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Message]:
    """get_message for many messages of one tenant, in one statement."""
    if not message_ids:
        return {}
    stmt = sa.select(Message).where(
        col(Message.id).in_(message_ids),
        col(Message.tenant_id) == tenant_id,
        col(Message.deleted_at).is_(None),
    )
    return {m.id: m for m in (await session.execute(stmt)).scalars()}


async def attachment_names_many(
    session: AsyncSession, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """attachment_names for many messages, in one statement (messages without any: absent)."""
    if not message_ids:
        return {}
    stmt = sa.select(col(Attachment.message_id), col(Attachment.filename)).where(
        col(Attachment.message_id).in_(message_ids),
        col(Attachment.filename).is_not(None),
    )
    out: dict[uuid.UUID, list[str]] = {}
    for message_id, filename in (await session.execute(stmt)).all():
        out.setdefault(message_id, []).append(str(filename))
    return out


_VERDICT_MANY = (
    sa.update(_m)
    .where(_m.c.id == sa.bindparam("b_id"))
    .values(
        is_spam=sa.bindparam("b_is_spam"),
        spam_score=sa.bindparam("b_spam_score"),
        spam_indicators=sa.bindparam("b_indicators", type_=_m.c.spam_indicators.type),
        category=sa.bindparam("b_category"),
        labels=sa.bindparam("b_labels", type_=_m.c.labels.type),
        updated_at=sa.func.now(),
    )
)


async def save_verdicts_and_labels(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """save_verdict plus the labels local rules gave, for many messages in one executemany.

    Each row: id, is_spam, spam_score, indicators, category, labels (the whole new list).
    """
    if not rows:
        return
    params = [
        {
            "b_id": r["id"],
            "b_is_spam": r["is_spam"],
            "b_spam_score": r["spam_score"],
            "b_indicators": r["indicators"],
            "b_category": r["category"],
            "b_labels": r["labels"],
        }
        for r in rows
    ]
    await session.execute(_VERDICT_MANY, params)
