"""Image attachments waiting for a thumbnail, and the thumbnails (`attachment_thumbnail`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import THUMBNAIL_SOURCE_TYPES, Attachment, AttachmentThumbnail, Message

_a = Attachment.__table__  # type: ignore[attr-defined]
_m = Message.__table__  # type: ignore[attr-defined]
_t = AttachmentThumbnail.__table__  # type: ignore[attr-defined]


class PendingImage(NamedTuple):
    attachment_id: uuid.UUID
    message_id: uuid.UUID
    content_type: str
    size: int


async def pending(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    since: datetime,
    limit: int,
) -> list[PendingImage]:
    """Image attachments of the account stored since `since` that have no thumbnail row yet
    (through the partial index of images by tenant and time)."""
    stmt = (
        sa.select(_a.c.id, _a.c.message_id, _a.c.content_type, _a.c.size)
        .join(_m, _m.c.id == _a.c.message_id)
        .outerjoin(_t, _t.c.attachment_id == _a.c.id)
        .where(
            _a.c.tenant_id == tenant_id,
            _a.c.created_at >= since,
            _a.c.content_type.in_(THUMBNAIL_SOURCE_TYPES),
            _m.c.account_id == account_id,
            _m.c.tenant_id == tenant_id,
            _m.c.deleted_at.is_(None),
            _t.c.attachment_id.is_(None),
        )
        .order_by(_a.c.created_at, _a.c.id)
        .limit(limit)
    )
    return [PendingImage(*row) for row in (await session.execute(stmt)).all()]


async def content(session: AsyncSession, attachment_id: uuid.UUID) -> bytes | None:
    stmt = sa.select(_a.c.content).where(_a.c.id == attachment_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def save(
    session: AsyncSession, *, tenant_id: uuid.UUID, image: PendingImage, **values: Any
) -> None:
    """Record the thumbnail (status ready) or why there is none (failed); once."""
    stmt = (
        insert(_t)
        .values(
            attachment_id=image.attachment_id,
            message_id=image.message_id,
            tenant_id=tenant_id,
            **values,
        )
        .on_conflict_do_nothing(index_elements=["attachment_id"])
    )
    await session.execute(stmt)


async def for_attachment(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    attachment_id: uuid.UUID,
) -> tuple[bool, AttachmentThumbnail | None]:
    """(whether the tenant has this attachment on this live message, its thumbnail row)."""
    stmt = (
        sa.select(_a.c.id, AttachmentThumbnail)
        .select_from(_a)
        .join(_m, _m.c.id == _a.c.message_id)
        .outerjoin(_t, _t.c.attachment_id == _a.c.id)
        .where(
            _a.c.id == attachment_id,
            _a.c.message_id == message_id,
            _a.c.tenant_id == tenant_id,
            _m.c.tenant_id == tenant_id,
            _m.c.deleted_at.is_(None),
        )
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return False, None
    return True, row[1]


async def delete_of_deleted_messages(session: AsyncSession, *, limit: int) -> int:
    """Remove up to `limit` thumbnails whose message is deleted; how many went."""
    doomed = (
        sa.select(_t.c.attachment_id)
        .join(_m, _m.c.id == _t.c.message_id)
        .where(_m.c.deleted_at.is_not(None))
        .limit(limit)
        .scalar_subquery()
    )
    result = await session.execute(sa.delete(_t).where(_t.c.attachment_id.in_(doomed)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
