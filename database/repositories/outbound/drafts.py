"""Send drafts (`send_draft`): what a send job sends, stored by the API, read by the task."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import SendDraft

_t = SendDraft.__table__  # type: ignore[attr-defined]


def values_from_request(
    body: dict[str, Any], attachment_ids: list[str], *, public_url: str | None = None
) -> dict[str, Any]:
    """`send_draft` columns from a validated POST /v1/messages/send body."""
    reply_to = body.get("reply_to_message_id")
    options: dict[str, Any] = {
        k: True for k in ("verp", "unsubscribe", "ignore_suppression") if body.get(k)
    }
    if options.get("unsubscribe") and public_url:
        options["public_url"] = public_url.rstrip("/")
    return {
        "to_addrs": body["to"],
        "cc_addrs": body.get("cc") or [],
        "bcc_addrs": body.get("bcc") or [],
        "subject": body.get("subject") or "",
        "text": body.get("text") or "",
        "html": body.get("html"),
        "reply_to_message_id": uuid.UUID(str(reply_to)) if reply_to else None,
        "attachment_ids": attachment_ids,
        "options": options,
    }


async def add(
    session: AsyncSession, *, tenant_id: uuid.UUID, event_id: uuid.UUID, draft: dict[str, Any]
) -> None:
    """Insert the draft of a new send event (columns as in `SendDraft`)."""
    await session.execute(sa.insert(_t).values(tenant_id=tenant_id, event_id=event_id, **draft))


async def get(
    session: AsyncSession, *, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> SendDraft | None:
    """The draft of this event, if it belongs to this tenant."""
    stmt = sa.select(SendDraft).where(_t.c.event_id == event_id, _t.c.tenant_id == tenant_id)
    return (await session.execute(stmt)).scalar_one_or_none()
