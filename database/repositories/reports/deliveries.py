"""Links of delivery reports to what postroom sent (`delivery_report`), and the sends a
report can name: by Message-ID, or by ledger id (Original-Envelope-Id, VERP)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import DeliveryReport, OutboundMessage

_d = DeliveryReport.__table__  # type: ignore[attr-defined]
_o = OutboundMessage.__table__  # type: ignore[attr-defined]


async def sends_named(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    message_ids: Sequence[str],
    outbound_ids: Sequence[uuid.UUID],
) -> list[sa.Row[Any]]:
    """The tenant's sends with one of these Message-IDs or ledger ids: (id, message_id_header,
    recipients)."""
    conditions = []
    if message_ids:
        conditions.append(_o.c.message_id_header.in_(list(message_ids)))
    if outbound_ids:
        conditions.append(_o.c.id.in_(list(outbound_ids)))
    if not conditions:
        return []
    stmt = sa.select(_o.c.id, _o.c.message_id_header, _o.c.recipients).where(
        _o.c.tenant_id == tenant_id, sa.or_(*conditions)
    )
    return list((await session.execute(stmt)).all())


async def insert_links(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert links; one already there (a report stored again) is left alone."""
    if not rows:
        return 0
    stmt = (
        insert(_d)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["outbound_id", "report_message_id", "email"])
        .returning(_d.c.id)
    )
    return len((await session.execute(stmt)).all())


async def for_sent_message(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, message_id_header: str
) -> list[sa.RowMapping]:
    """The report lines against the send with this Message-ID from this account, oldest first."""
    stmt = (
        sa.select(
            _d.c.email,
            _d.c.report_message_id,
            _d.c.kind,
            _d.c.status,
            _d.c.hard,
            _d.c.created_at,
        )
        .join(_o, _o.c.id == _d.c.outbound_id)
        .where(
            _o.c.tenant_id == tenant_id,
            _o.c.account_id == account_id,
            _o.c.message_id_header == message_id_header,
        )
        .order_by(_d.c.created_at, _d.c.email)
        .limit(1000)
    )
    return list((await session.execute(stmt)).mappings())
