"""POP3 sync state: the maildrop's unique ids (UIDL) are the messages' provider ids in the
account's INBOX folder, so "what do we have" is a query on `message`. Every statement filters
on the tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Message

_m = Message.__table__  # type: ignore[attr-defined]


async def known_ids(
    session: AsyncSession, *, tenant_id: uuid.UUID, folder_id: uuid.UUID
) -> dict[str, bool]:
    """UIDL -> still live (False: marked deleted here) for every message the folder has had.

    Rows deleted here are included: a soft-deleted message stays on the server and must not
    be downloaded again.
    """
    stmt = sa.select(_m.c.provider_id, _m.c.deleted_at.is_(None)).where(
        _m.c.tenant_id == tenant_id, _m.c.folder_id == folder_id
    )
    return {str(pid): bool(live) for pid, live in await session.execute(stmt)}


async def mark_gone(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    folder_id: uuid.UUID,
    provider_ids: Sequence[str],
) -> list[uuid.UUID]:
    """Mark deleted the live rows whose message left the maildrop; the ids marked."""
    if not provider_ids:
        return []
    stmt = (
        sa.update(_m)
        .where(
            _m.c.tenant_id == tenant_id,
            _m.c.folder_id == folder_id,
            _m.c.provider_id.in_(list(provider_ids)),
            _m.c.deleted_at.is_(None),
        )
        .values(deleted_at=sa.func.now(), updated_at=sa.func.now())
        .returning(_m.c.id)
    )
    return list((await session.execute(stmt)).scalars())
