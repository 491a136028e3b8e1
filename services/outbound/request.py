"""What a send is asked to do (`SendRequest`, read from the event's draft) and the checked
form of it (`Prepared`) that the SMTP and Nylas paths both send.

Apart from services.outbound.send so that services.outbound.nylas_delivery can use them
without importing the send service that calls it (scripts/check_imports.py forbids the cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from database.models import SendDraft
from services.outbound.compose import AttachmentFile, Person, ReplyTarget


@dataclass
class SendRequest:
    to: list[Any]
    cc: list[Any] = field(default_factory=list)
    bcc: list[Any] = field(default_factory=list)
    subject: str = ""
    body_text: str | None = None
    body_html: str | None = None
    attachment_ids: list[str] = field(default_factory=list)
    reply_to_message_id: str | None = None
    # verp, unsubscribe, ignore_suppression (bools) and public_url (docs/reports.md).
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_draft(cls, draft: SendDraft) -> SendRequest:
        return cls(
            to=list(draft.to_addrs or []),
            cc=list(draft.cc_addrs or []),
            bcc=list(draft.bcc_addrs or []),
            subject=draft.subject or "",
            body_text=draft.text or "",
            body_html=draft.html,
            attachment_ids=[str(a) for a in draft.attachment_ids or []],
            reply_to_message_id=str(draft.reply_to_message_id)
            if draft.reply_to_message_id
            else None,
            options=dict(draft.options or {}),
        )

    def private_strings(self) -> list[str]:
        """What an error about this send must not quote: addresses, names, subject, bodies."""
        found: list[str] = [self.subject, self.body_text or "", self.body_html or ""]
        for value in (*self.to, *self.cc, *self.bcc):
            if isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict):
                found += [v for k, v in value.items() if k in ("email", "name")]
        # Longest first, so an address is replaced whole before a shorter name inside it.
        usable = {v.strip() for v in found if isinstance(v, str) and len(v.strip()) >= 3}
        return sorted(usable, key=len, reverse=True)


@dataclass
class Prepared:
    """A validated request: parsed recipients, loaded attachments and reply target."""

    to: list[Person]
    cc: list[Person]
    bcc: list[Person]
    attachments: list[AttachmentFile]
    reply: ReplyTarget | None
    reply_provider_id: str | None
    # Recipients left out because the tenant suppresses them (lowercased).
    suppressed: list[str] = field(default_factory=list)
