"""Messages, their folders and attachment metadata: upserts keyed by the provider's id."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Attachment, Folder, Message
from database.repositories.chunks import chunked, width

_m = Message.__table__  # type: ignore[attr-defined]
_f = Folder.__table__  # type: ignore[attr-defined]
_a = Attachment.__table__  # type: ignore[attr-defined]

# Columns an upsert must never overwrite.
_KEEP_ON_UPDATE = {
    "id",
    "tenant_id",
    "account_id",
    "provider_id",
    "created_at",
    "deleted_at",
    "is_spam",
    "spam_score",
    "spam_indicators",
    "category",
}


async def upsert_many(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, refresh: Iterable[str] | None = None
) -> dict[str, tuple[uuid.UUID, bool]]:
    """Insert or update by (account_id, provider_id): provider_id -> (id, inserted).

    The one message upsert (webhooks, Nylas sync, IMAP and POP3 sync, our sent copies). On
    conflict it sets the columns in `refresh` (None: every given column but those in
    _KEEP_ON_UPDATE). A deleted message is never brought back, and a state older than the
    stored one (provider_version) does not overwrite it: Nylas does not order deliveries.
    Refused rows are absent from the answer. All rows must have the same keys.
    """
    if not rows:
        return {}
    keys = rows[0].keys()
    columns = [k for k in (keys if refresh is None else refresh) if k not in _KEEP_ON_UPDATE]
    out: dict[str, tuple[uuid.UUID, bool]] = {}
    # Plain values go as the executemany parameters of one statement: SQLAlchemy sends them
    # as multi-row INSERTs ("insertmanyvalues") from one cached compilation, where a statement
    # built with .values(rows) is compiled anew for every row count (most of a webhook
    # batch's CPU, services/nylas/batch.py). A row holding a SQL expression (now()) needs .values().
    many = not any(isinstance(v, sa.ClauseElement) for r in rows for v in r.values())
    for part in chunked(rows, width(rows)):
        base = insert(_m) if many else insert(_m).values(list(part))
        excluded = base.excluded
        stmt = base.on_conflict_do_update(
            index_elements=["account_id", "provider_id"],
            set_={**{k: excluded[k] for k in columns}, "updated_at": sa.func.now()},
            where=sa.and_(
                _m.c.deleted_at.is_(None),
                sa.or_(
                    _m.c.provider_version.is_(None),
                    excluded.provider_version.is_(None),
                    _m.c.provider_version <= excluded.provider_version,
                ),
            ),
        ).returning(_m.c.id, _m.c.provider_id, sa.literal_column("(xmax = 0)").label("inserted"))
        result = await (session.execute(stmt, list(part)) if many else session.execute(stmt))
        out.update({r.provider_id: (r.id, bool(r.inserted)) for r in result})
    return out


async def mark_deleted(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    provider_id: str,
    provider_version: int | None,
) -> tuple[uuid.UUID, bool]:
    """Mark deleted, or leave a tombstone when the message was never seen, so a late
    `created` for it cannot resurrect it: (id, whether a live message was deleted now)."""
    live = (
        await session.execute(
            sa.select(_m.c.id)
            .where(
                _m.c.account_id == account_id,
                _m.c.provider_id == provider_id,
                _m.c.deleted_at.is_(None),
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    stmt = (
        insert(_m)
        .values(
            tenant_id=tenant_id,
            account_id=account_id,
            provider_id=provider_id,
            provider_version=provider_version,
            deleted_at=sa.func.now(),
            unread=False,
        )
        .on_conflict_do_update(
            index_elements=["account_id", "provider_id"],
            set_={
                "deleted_at": sa.func.coalesce(_m.c.deleted_at, sa.func.now()),
                "updated_at": sa.func.now(),
            },
        )
        .returning(_m.c.id)
    )
    return (await session.execute(stmt)).scalar_one(), live is not None


async def ensure_folders(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    folders: list[dict[str, Any]],
) -> dict[str, uuid.UUID]:
    """Create the folders that do not exist yet; map name -> id for all of them."""
    if not folders:
        return {}
    rows = [{"tenant_id": tenant_id, "account_id": account_id, **f} for f in folders]
    out: dict[str, uuid.UUID] = {}
    for part in chunked(rows, width(rows)):
        base = insert(_f).values(list(part))
        stmt = base.on_conflict_do_update(
            index_elements=["account_id", "name"],
            set_={"role": sa.func.coalesce(_f.c.role, base.excluded.role)},
        ).returning(_f.c.id, _f.c.name)
        out.update({r.name: r.id for r in (await session.execute(stmt)).all()})
    return out


async def folder_by_role(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, role: str
) -> Folder | None:
    """The tenant's account's folder with this role (sent, junk, trash...), if it has one."""
    stmt = (
        sa.select(Folder)
        .where(_f.c.tenant_id == tenant_id, _f.c.account_id == account_id, _f.c.role == role)
        .order_by(_f.c.name)
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def replace_attachments(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    message_ids: Sequence[uuid.UUID],
    rows: Sequence[dict[str, Any]],
) -> None:
    """Drop the attachment rows of `message_ids` (the tenant's), then insert `rows` (each
    with its `message_id`). A message stored for the first time has nothing to drop."""
    for ids in chunked(message_ids, 1):
        await session.execute(
            sa.delete(_a).where(_a.c.tenant_id == tenant_id, _a.c.message_id.in_(list(ids)))
        )
    values = [{**r, "tenant_id": tenant_id} for r in rows]
    for part in chunked(values, width(values)):
        await session.execute(insert(_a).values(list(part)))


async def get_by_provider_id(
    session: AsyncSession, *, account_id: uuid.UUID, provider_id: str
) -> Message | None:
    stmt = sa.select(Message).where(_m.c.account_id == account_id, _m.c.provider_id == provider_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_many_for_tenant(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[Message]:
    """The tenant's messages among these ids (others' ids are simply absent)."""
    if not message_ids:
        return []
    stmt = sa.select(Message).where(_m.c.tenant_id == tenant_id, _m.c.id.in_(message_ids))
    return list((await session.execute(stmt)).scalars())


async def count_for_tenant(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> int:
    """How many of these ids are the tenant's messages (no rows loaded)."""
    if not message_ids:
        return 0
    stmt = sa.select(sa.func.count()).where(_m.c.tenant_id == tenant_id, _m.c.id.in_(message_ids))
    return int((await session.execute(stmt)).scalar_one())


async def mark_many_deleted(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Mark deleted those of the tenant's live messages among these ids: the ids marked."""
    if not message_ids:
        return []
    stmt = (
        sa.update(_m)
        .where(_m.c.tenant_id == tenant_id, _m.c.id.in_(message_ids), _m.c.deleted_at.is_(None))
        .values(deleted_at=sa.func.now(), updated_at=sa.func.now())
        .returning(_m.c.id)
    )
    return list((await session.execute(stmt)).scalars())
