"""GET /v1/threads: the tenant's threads newest first, with signed keyset cursors."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.messages import threads as repo
from services import cursors
from services.accounts.admin import get_account
from settings import Settings


def _scope(tenant_id: uuid.UUID, account_id: uuid.UUID | None) -> dict[str, Any]:
    return {"kind": "threads", "tenant": str(tenant_id), "account": str(account_id or "")}


async def list_threads(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[sa.RowMapping], str | None]:
    """One page and the cursor of the next (None on the last); another tenant's account is
    404, as for /v1/messages."""
    key = cursors.signing_key(settings)
    scope = _scope(tenant_id, account_id)
    after = cursors.decode(key, scope, cursor) if cursor else None
    if account_id is not None:
        await get_account(session, tenant_id, account_id)
    rows = await repo.list_page(
        session, tenant_id=tenant_id, account_id=account_id, after=after, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, scope, rows[-1]["last_message_at"], rows[-1]["id"])
    return rows, next_cursor
