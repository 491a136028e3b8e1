"""Message bodies: the listed message, its detail, and the send/delete/feedback requests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from api.schemas.common import Address, AddressIn, Strict
from services.outbound.templates import NAME_PATTERN


class SpamVerdict(BaseModel):
    is_spam: bool
    score: float | None
    indicators: list[str]


class ReportRecipient(BaseModel):
    email: str
    status: str | None
    action: Literal["failed", "delayed", "delivered"] | None
    reason: str
    hard: bool
    diagnostic: str | None


class ReportPublic(BaseModel):
    """A delivery report (API.md "Delivery reports"); docs/reports.md lists the reasons."""

    kind: Literal["bounce", "delay", "complaint", "auto_reply", "delivered"]
    recipients: list[ReportRecipient]
    original_message_id: str | None
    feedback_type: str | None


class DeliveryPublic(BaseModel):
    """One report line against a sent message."""

    email: str
    report_id: str
    kind: str
    status: str | None
    hard: bool
    at: datetime


class MessagePublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str
    account_id: str
    folder: str | None
    provider_id: str
    message_id_header: str | None
    thread_id: str | None
    from_: Address | None = Field(alias="from")
    to: list[Address]
    cc: list[Address]
    subject: str | None
    date: datetime | None
    snippet: str | None
    unread: bool
    starred: bool
    has_attachments: bool
    spam: SpamVerdict | None
    category: str | None
    deleted: bool = False
    # Over POSTROOM_MAX_MESSAGE_BYTES: the message holds its headers only.
    too_large: bool = False
    report: ReportPublic | None = None


class AttachmentPublic(BaseModel):
    id: str
    filename: str | None
    content_type: str
    size: int


class MessageDetail(MessagePublic):
    text: str | None
    html: str | None
    headers: list[list[str]]
    attachments: list[AttachmentPublic]
    # The new text of a reply: `text` without quoted history, quote headers or signature.
    reply_text: str | None = None
    # The delivery reports against this message when postroom sent it (else empty).
    delivery: list[DeliveryPublic] = Field(default_factory=list)


class MessagePage(BaseModel):
    data: list[MessagePublic]
    next_cursor: str | None


class AttachmentIn(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(
        default="application/octet-stream", max_length=255, pattern=r"^[\w.+-]+/[\w.+-]+$"
    )
    content_base64: str = Field(max_length=20_000_000)


class MessageSend(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11",
                    "to": [{"email": "bo@example.com", "name": "Bo"}],
                    "cc": [],
                    "bcc": [],
                    "subject": "Hello",
                    "text": "Hi Bo,\nsee you soon.",
                    "attachments": [],
                }
            ]
        },
    )
    account_id: uuid.UUID
    to: list[AddressIn] = Field(min_length=1, max_length=100)
    cc: list[AddressIn] = Field(default_factory=list, max_length=100)
    bcc: list[AddressIn] = Field(default_factory=list, max_length=100)
    subject: str = Field(default="", max_length=998, pattern=r"^[^\r\n]*$")
    text: str = Field(default="", max_length=5_000_000)
    html: str | None = Field(default=None, max_length=5_000_000)
    reply_to_message_id: uuid.UUID | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    send_at: AwareDatetime | None = Field(
        default=None,
        description="Send at this time (ISO 8601 with a zone, at most 30 days ahead): the job "
        "answers 202 at once and its event is `scheduled` until then. A time up to a minute "
        "past sends now; an earlier one is 422.",
    )
    template: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Name of a template (PUT /v1/templates/{name}) to render instead of "
        "giving `subject`, `text` and `html` (giving both is 422).",
    )
    variables: dict[str, Any] | None = Field(
        default=None,
        description="The template's variables (JSON values). A variable the template uses "
        "and this lacks is 422; in `html` they are HTML-escaped, in subject and text not.",
    )

    verp: StrictBool | None = Field(
        default=None,
        description="Send each recipient with its own signed return path "
        "(`bounces+<token>@<sender domain>`), so every bounce is attributed to its send and "
        "recipient even when the bouncing server drops the original's headers. SMTP accounts.",
    )
    unsubscribe: StrictBool | None = Field(
        default=None,
        description="Add RFC 8058 one-click `List-Unsubscribe` (https and mailto) and "
        "`List-Unsubscribe-Post` headers, one link per recipient. SMTP accounts.",
    )
    ignore_suppression: StrictBool | None = Field(
        default=None,
        description="Send to suppressed addresses too (they are left out otherwise, and "
        "listed in the result's `suppressed`).",
    )

    # Fields left out of the stored request when not given, so that a request without them
    # hashes (Idempotency-Key) as it did before they existed.
    OPTIONAL_NEW: ClassVar[tuple[str, ...]] = (
        "send_at",
        "template",
        "variables",
        "verp",
        "unsubscribe",
        "ignore_suppression",
    )

    def content_given(self) -> bool:
        """Whether subject, text or html were given (not just defaulted)."""
        return bool({"subject", "text", "html"} & self.model_fields_set)


class MessageDelete(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"message_ids": ["0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11"], "permanent": False}
            ]
        },
    )
    message_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
    permanent: StrictBool = False


class Feedback(Strict):
    label: Literal["spam", "ham"]
