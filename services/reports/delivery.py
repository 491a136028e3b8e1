"""A sent message's `delivery`: the report lines against the send it came from."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.reports import deliveries as deliveries_repo


async def delivery_of(
    session: AsyncSession, *, tenant_id: uuid.UUID, message: Any
) -> list[dict[str, Any]]:
    """Report lines against the message's send (its account and Message-ID); [] for mail
    postroom did not send. `message` is a row with account_id and message_id_header."""
    header = message["message_id_header"]
    if not header:
        return []
    rows = await deliveries_repo.for_sent_message(
        session, tenant_id=tenant_id, account_id=message["account_id"], message_id_header=header
    )
    return [
        {
            "email": r["email"],
            "report_id": str(r["report_message_id"]),
            "kind": r["kind"],
            "status": r["status"],
            "hard": r["hard"],
            "at": r["created_at"],
        }
        for r in rows
    ]
