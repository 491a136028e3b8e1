"""The send ledger (`outbound_message`) and the tenant-scoped reads a send needs."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import (
    Attachment,
    Message,
    OutboundAttachment,
    OutboundMessage,
)

_o = OutboundMessage.__table__  # type: ignore[attr-defined]
_m = Message.__table__  # type: ignore[attr-defined]
_a = Attachment.__table__  # type: ignore[attr-defined]
_u = OutboundAttachment.__table__  # type: ignore[attr-defined]


async def get_or_create(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    event_id: uuid.UUID,
    message_id_header: str,
    recipients: list[str],
) -> OutboundMessage:
    """The ledger row of this event, created `pending` on the first attempt only."""
    await session.execute(
        insert(_o)
        .values(
            tenant_id=tenant_id,
            account_id=account_id,
            event_id=event_id,
            message_id_header=message_id_header,
            recipients=recipients,
            status="pending",
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    stmt = sa.select(OutboundMessage).where(_o.c.event_id == event_id)
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one()


async def transition(
    session: AsyncSession,
    *,
    outbound_id: uuid.UUID,
    from_status: tuple[str, ...],
    to_status: str,
    **values: Any,
) -> bool:
    """Compare-and-set the status; False when another run moved it first."""
    stamps: dict[str, Any] = {}
    if to_status == "sending":
        stamps["sending_at"] = sa.func.now()
    elif to_status == "sent":
        stamps["sent_at"] = sa.func.now()
    result = await session.execute(
        sa.update(_o)
        .where(_o.c.id == outbound_id, _o.c.status.in_(from_status))
        .values(status=to_status, **stamps, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_message(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    """A message of this tenant (the one a reply answers)."""
    stmt = sa.select(Message).where(_m.c.id == message_id, _m.c.tenant_id == tenant_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_attachments(
    session: AsyncSession, *, tenant_id: uuid.UUID, attachment_ids: list[uuid.UUID]
) -> list[Attachment | OutboundAttachment]:
    """Uploads for a send, or attachments of stored messages (forwarding), of this tenant
    only, in the order asked; ids of other tenants are simply absent."""
    if not attachment_ids:
        return []
    found: dict[uuid.UUID, Attachment | OutboundAttachment] = {}
    uploads = sa.select(OutboundAttachment).where(
        _u.c.id.in_(attachment_ids), _u.c.tenant_id == tenant_id
    )
    found.update({a.id: a for a in (await session.execute(uploads)).scalars()})
    rest = [i for i in attachment_ids if i not in found]
    if rest:
        stored = sa.select(Attachment).where(_a.c.id.in_(rest), _a.c.tenant_id == tenant_id)
        found.update({a.id: a for a in (await session.execute(stored)).scalars()})
    return [found[i] for i in attachment_ids if i in found]
