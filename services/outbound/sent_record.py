"""After a send: append the copy to the IMAP Sent folder, then record it as a message row.

Two steps on purpose: the APPEND is a mail-server conversation and runs with no transaction
open; the row is written afterwards in a short one (docs/architecture.md, "Transactions").
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Folder
from database.repositories.messages import rows as messages_repo
from database.repositories.messages import threads as threads_repo
from services.errors import PostroomError
from services.imap.slots import imap_slot
from services.messages.html_text import html_to_text
from services.outbound.compose import AttachmentFile, Composed, Person
from services.outbound.sent_copy import Appended, append_sent_copy
from settings import Settings

log = structlog.get_logger(__name__)


def _addrs(message: Any, header: str) -> list[dict[str, Any]]:
    value = message.get(header)
    if value is None:
        return []
    return [{"name": a.display_name or None, "email": a.addr_spec} for a in value.addresses]


def sent_values(
    *,
    account: Account,
    composed: Composed,
    bcc: list[Person],
    body_text: str | None,
    body_html: str | None,
    provider_id: str,
    folder_id: uuid.UUID | None,
    appended: Appended | None,
    has_attachments: bool,
) -> dict[str, Any]:
    """Message columns for our own sent message, taken from what was actually transmitted."""
    msg = composed.message
    # An empty text part next to an HTML body is replaced by the HTML's text.
    text = body_text if body_text else (html_to_text(body_html) if body_html else "")
    now = datetime.now(UTC)
    return {
        "tenant_id": account.tenant_id,
        "account_id": account.id,
        "folder_id": folder_id,
        "provider_id": provider_id,
        "imap_uid": appended.uid if appended else None,
        "uidvalidity": appended.uidvalidity if appended else None,
        "message_id_header": composed.message_id_header,
        "in_reply_to": composed.in_reply_to,
        "references": composed.references,
        "from_name": _addrs(msg, "From")[0]["name"],
        "from_email": account.email,
        "to_addrs": _addrs(msg, "To"),
        "cc_addrs": _addrs(msg, "Cc"),
        "bcc_addrs": [p.to_dict() for p in bcc],
        "subject": str(msg["Subject"]),
        "date": now,
        "sort_at": now,
        "snippet": " ".join(text.split())[:200],
        "text": text,
        "html": body_html,
        "unread": False,
        "flags": ["\\Seen"],
        "labels": ["sent"],
        "size": len(composed.data),
        "has_attachments": has_attachments,
    }


async def append_copy(
    settings: Settings, *, account: Account, imap: Any, sent_folder: Folder | None, data: bytes
) -> tuple[Appended | None, str]:
    """APPEND the Sent copy (no database: the caller holds no transaction while it runs).

    (what was appended, "appended" | "failed" | "skipped"); a failed APPEND never fails the
    send, which already happened.
    """
    if not (isinstance(imap, dict) and imap.get("host")):
        return None, "skipped"
    try:
        # One of the account's IMAP connection slots (services.imap.slots).
        async with imap_slot(settings, account.id):
            appended = await append_sent_copy(
                imap,
                # The wire name (modified UTF-7) when the sync recorded one.
                folder=(sent_folder.provider_id or sent_folder.name) if sent_folder else None,
                data=data,
                when=datetime.now(UTC),
                allowed_private_hosts=settings.allowed_private_mail_hosts,
            )
    except Exception as exc:
        # The mail is already on its way: a missing Sent copy is logged, not retried.
        message = exc.message if isinstance(exc, PostroomError) else None
        log.warning("sent_copy_failed", error=type(exc).__name__, message=message)
        return None, "failed"
    return appended, "appended"


async def record_sent(
    session: AsyncSession,
    *,
    account: Account,
    sent_folder: Folder | None,
    appended: Appended | None,
    composed: Composed,
    bcc: list[Person],
    body_text: str | None,
    body_html: str | None,
    attachments: list[AttachmentFile],
    outbound_id: uuid.UUID,
) -> uuid.UUID:
    """The message row of our sent message (one step of the caller's transaction)."""
    folder_id = sent_folder.id if sent_folder else None
    if appended is not None and folder_id is None:
        ids = await messages_repo.ensure_folders(
            session,
            tenant_id=account.tenant_id,
            account_id=account.id,
            folders=[
                {
                    "name": appended.folder,
                    "provider_id": appended.wire_name or appended.folder,
                    "role": "sent",
                }
            ],
        )
        folder_id = ids.get(appended.folder)
    if appended is not None and appended.uid is not None:
        # The IMAP sync's own id scheme, so its next run updates this row instead of adding one.
        name = sent_folder.name if sent_folder else appended.folder
        provider_id = f"{name}:{appended.uidvalidity}:{appended.uid}"
    else:
        provider_id = f"outbound:{outbound_id}"
    values = sent_values(
        account=account,
        composed=composed,
        bcc=bcc,
        body_text=body_text,
        body_html=body_html,
        provider_id=provider_id,
        folder_id=folder_id,
        appended=appended,
        has_attachments=bool(attachments),
    )
    # A reply we send joins the thread of what it answers (In-Reply-To / References).
    await threads_repo.assign_by_headers(session, [values])
    saved = (await messages_repo.upsert_many(session, [values])).get(provider_id)
    if saved is None:
        existing = await messages_repo.get_by_provider_id(
            session, account_id=account.id, provider_id=provider_id
        )
        assert existing is not None
        return existing.id
    message_id, _ = saved
    await messages_repo.replace_attachments(
        session,
        tenant_id=account.tenant_id,
        message_ids=[message_id],
        rows=[
            {
                "message_id": message_id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": len(a.content),
                "sha256": hashlib.sha256(a.content).hexdigest(),
            }
            for a in attachments
        ],
    )
    return message_id
