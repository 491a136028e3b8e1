"""Sending for Nylas accounts: `messages.send` with the event's id as the Idempotency-Key.

Nylas itself answers a repeated key (per grant, for 1 hour) with the first send's message,
so a retry after an unknown outcome may call it again within that hour; past it, the
ledger's `sending` state is treated as unknown exactly like SMTP.
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from database.engine import Database
from database.models import Account, Event, OutboundMessage
from database.repositories.messages import rows as messages_repo
from database.repositories.outbound import ledger as outbound_repo
from services.errors import Conflict, PostroomError, ProviderTemporaryError, ValidationFailed
from services.events.outcome import Outcome
from services.nylas.gateway import NylasGateway
from services.nylas.notifications import store_message
from services.outbound import send_events
from services.outbound.compose import Person
from services.outbound.request import Prepared, SendRequest
from services.outbound.smtp import DeliveryUnknown

# Nylas keeps an Idempotency-Key for 1 hour; leave a margin for clocks and queues.
IDEMPOTENCY_WINDOW = timedelta(minutes=50)


def send_body(*, prepared: Prepared, request: SendRequest, sender: Person) -> dict[str, Any]:
    """The `messages.send` request body (NYLAS.md section 5)."""
    if request.subject and ("\r" in request.subject or "\n" in request.subject):
        raise ValidationFailed("The subject contains a line break.")
    html = request.body_html
    if html is None:
        from html import escape

        html = "<pre>" + escape(request.body_text or "") + "</pre>"
    body: dict[str, Any] = {
        "to": [p.to_dict() if p.name else {"email": p.email} for p in prepared.to],
        "cc": [p.to_dict() if p.name else {"email": p.email} for p in prepared.cc],
        "bcc": [p.to_dict() if p.name else {"email": p.email} for p in prepared.bcc],
        "subject": request.subject,
        "body": html,
    }
    if prepared.attachments:
        body["attachments"] = [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": len(a.content),
                "content": base64.b64encode(a.content).decode(),
            }
            for a in prepared.attachments
        ]
    if prepared.reply_provider_id:
        body["reply_to_message_id"] = prepared.reply_provider_id
    return body


async def _move(
    db: Database, row: OutboundMessage, frm: tuple[str, ...], to: str, **values: Any
) -> bool:
    async with db.transaction() as s:
        return await outbound_repo.transition(
            s, outbound_id=row.id, from_status=frm, to_status=to, **values
        )


async def _store(
    db: Database, *, account: Account, obj: dict[str, Any], row: OutboundMessage, recipients: int
) -> uuid.UUID:
    """The sent message's row and its message.sent, in a short transaction after Nylas
    answered."""
    async with db.transaction() as session:
        saved = await store_message(session, account=account, obj=obj, version=int(time.time()))
        if saved is not None:
            message_id = saved[0]
        else:
            existing = await messages_repo.get_by_provider_id(
                session, account_id=account.id, provider_id=obj["id"]
            )
            assert existing is not None
            message_id = existing.id
        await send_events.tell_sent(
            session, row=row, message_id=message_id, recipients_sent=recipients
        )
    return message_id


async def send_via_nylas(
    db: Database,
    *,
    account: Account,
    event: Event,
    prepared: Prepared,
    request: SendRequest,
    nylas: NylasGateway | None,
    sender: Person,
) -> Outcome:
    """Send through Nylas at most once for this event; record the sent message.

    Owns its transactions: the ledger moves and the message row commit on their own, and no
    transaction is open while Nylas answers.
    """
    if nylas is None or not account.grant_id:
        raise ValidationFailed("Nylas is not configured for this account.")
    body = send_body(prepared=prepared, request=request, sender=sender)
    recipients = list(dict.fromkeys(p.email for p in (*prepared.to, *prepared.cc, *prepared.bcc)))
    async with db.transaction() as s:
        row = await outbound_repo.get_or_create(
            s,
            tenant_id=account.tenant_id,
            account_id=account.id,
            event_id=event.id,
            message_id_header=f"nylas-send:{event.id}",
            recipients=recipients,
        )
    sent_id = (row.server_reply or "").removeprefix("nylas:") if row.status == "sent" else ""
    if sent_id:
        # Already sent: only the bookkeeping of the first attempt may be missing.
        obj = await nylas.find_message(account.grant_id, sent_id)
        stored = await _store(db, account=account, obj=obj, row=row, recipients=len(recipients))
        return _outcome(account, stored, obj, recipients)
    started = row.sending_at or datetime.now(UTC)
    if row.status == "sending" and datetime.now(UTC) - started > IDEMPOTENCY_WINDOW:
        raise DeliveryUnknown(
            "An earlier attempt sent this through Nylas more than the idempotency window ago; "
            "it is not sent again."
        )
    if row.status in ("pending", "failed") and not await _move(
        db, row, ("pending", "failed"), "sending"
    ):
        raise Conflict("Another attempt is already sending this message.")
    try:
        obj = await nylas.send_message(account.grant_id, body=body, idempotency_key=str(event.id))
    except ProviderTemporaryError:
        raise  # the same key on the retry makes a second call harmless
    except PostroomError as exc:
        async with db.transaction() as s:  # with message.send_failed, in the same commit
            await send_events.fail(s, row=row, server_reply=exc.message, error_code=exc.code)
        raise
    await _move(db, row, ("sending", "sent"), "sent", server_reply=f"nylas:{obj.get('id')}")
    stored = await _store(db, account=account, obj=obj, row=row, recipients=len(recipients))
    return _outcome(account, stored, obj, recipients)


def _outcome(
    account: Account, message_id: uuid.UUID, obj: dict[str, Any], recipients: list[str]
) -> Outcome:
    return Outcome(
        status="succeeded",
        result={
            "status": "success",
            "message_id": str(message_id),
            "provider_id": obj.get("id"),
            # A count (API.md): the addresses stay in the ledger row, out of the result backend.
            "recipients_sent": len(recipients),
        },
        tenant_id=account.tenant_id,
        account_id=account.id,
        message_ids=[message_id],
    )
