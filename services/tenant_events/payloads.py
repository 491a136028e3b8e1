"""Payloads of tenant events: ids and the objects as the API lists them, never bodies or
credentials (API.md "Outbound events")."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Event
from database.repositories.messages import query as messages_query
from services.events.public import event_fields
from services.messages.fields import message_fields

# Ids per payload read: one IN list of a bounded size, whatever a sync hands over.
PAYLOAD_CHUNK = 1000


def json_time(value: datetime | None) -> str | None:
    """A timestamp as the API's JSON writes it (pydantic: UTC as `Z`)."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def account_payload(account: Account) -> dict[str, Any]:
    """The account as `GET /v1/accounts/{id}` shows it."""
    return {
        "id": str(account.id),
        "provider": str(account.provider),
        "email": account.email,
        "status": str(account.status),
        "sync_interval_s": account.sync_interval_s,
        "last_sync_at": json_time(account.last_sync_at),
        "created_at": json_time(account.created_at),
    }


def message_payload(row: Any) -> dict[str, Any]:
    """One row of messages_query.listed_rows -> the message as `GET /v1/messages` lists it."""
    fields = message_fields(row)
    fields["date"] = json_time(fields["date"])
    return fields


async def message_payloads(
    session: AsyncSession, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[dict[str, Any]]:
    """The tenant's messages among these ids as the list shows them, in the order given
    (ids of other tenants, or of rows that are gone, are left out)."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(message_ids), PAYLOAD_CHUNK):
        part = message_ids[i : i + PAYLOAD_CHUNK]
        found = {r["id"]: r for r in await messages_query.listed_rows(session, tenant_id, part)}
        out.extend(message_payload(found[m]) for m in part if m in found)
    return out


async def payloads_by_provider_id(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID, provider_ids: list[str]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The account's stored messages among these provider ids, by message id, as the list
    shows them: what a sync batch had before it wrote (emit.emit_stored's `before`)."""
    out: dict[uuid.UUID, dict[str, Any]] = {}
    for i in range(0, len(provider_ids), PAYLOAD_CHUNK):
        part = provider_ids[i : i + PAYLOAD_CHUNK]
        for r in await messages_query.listed_rows_by_provider_id(
            session, tenant_id, account_id, part
        ):
            out[r["id"]] = message_payload(r)
    return out


def event_payload(event: Event) -> dict[str, Any]:
    """The event (a webhook's or a job's) as `GET /v1/events/{id}` shows it."""
    out: dict[str, Any] = {}
    for key, value in event_fields(event).items():
        if isinstance(value, datetime):
            value = json_time(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        out[key] = value
    return out
