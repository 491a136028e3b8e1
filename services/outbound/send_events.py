"""What a send tells the tenant's application: `message.sent` with the stored sent message,
`message.send_failed` when the server refused it for good (API.md "Outbound events").

`message.sent` is written with the sent message's row; that bookkeeping runs again when a
task retries after the ledger said `sent`, so its id is derived from the ledger row and a
second write of it is a no-op: one send, one event. A refusal is written with the ledger's
move to `failed`, which happens once per refused attempt (a replay may try again)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OutboundMessage
from database.repositories.outbound import ledger as outbound_repo
from services.tenant_events.emit import TenantEventType, emit
from services.tenant_events.payloads import message_payloads

# Namespace of the ids of `message.sent` events (uuid5 of the ledger row's id).
_SENT_NS = uuid.UUID("5b0e7f2c-7a63-4f3e-9d6e-3e7f1c0b9a51")


def _send(row: OutboundMessage) -> dict[str, Any]:
    """The send itself: the job's event (POST /v1/messages/send's `event_id`) and the
    Message-ID it went out with; never recipients or contents."""
    return {
        "event_id": str(row.event_id) if row.event_id else None,
        "account_id": str(row.account_id),
        "message_id_header": row.message_id_header,
    }


async def tell_sent(
    session: AsyncSession,
    *,
    row: OutboundMessage,
    message_id: uuid.UUID,
    recipients_sent: int,
) -> None:
    """`message.sent` for the ledger row, with its stored message (once per ledger row)."""
    found = await message_payloads(session, row.tenant_id, [message_id])
    await emit(
        session,
        tenant_id=row.tenant_id,
        type=TenantEventType.message_sent,
        data={
            "message": found[0] if found else None,
            "send": {**_send(row), "recipients_sent": recipients_sent},
        },
        event_id=uuid.uuid5(_SENT_NS, str(row.id)),
    )


async def fail(
    session: AsyncSession,
    *,
    row: OutboundMessage,
    server_reply: str,
    error_code: str,
    smtp_code: int | None = None,
    in_ledger: bool = True,
) -> bool:
    """Move the ledger from `sending` to `failed` and tell `message.send_failed` in the same
    transaction; False when another run moved it first (then it told, not this one).
    `in_ledger=False`: refused before DATA (every recipient refused), the ledger stays
    `pending` (nothing was handed over) and only the event is written."""
    moved = not in_ledger or await outbound_repo.transition(
        session,
        outbound_id=row.id,
        from_status=("sending",),
        to_status="failed",
        server_reply=server_reply[:1000],
    )
    if moved:
        await emit(
            session,
            tenant_id=row.tenant_id,
            type=TenantEventType.message_send_failed,
            # No stored message: nothing was sent. The server's code, never its text (it
            # quotes recipients).
            data={
                "message": None,
                "send": {**_send(row), "error": {"code": error_code, "smtp_code": smtp_code}},
            },
        )
    return moved
