"""Webhook ingest: verify, parse and store a Nylas notification exactly once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from database.models import EventSource
from database.repositories import events as events_repo
from services.webhooks import decompress, parse_notification, verify_signature

PROCESS_TASK = "postroom.events.process"


@dataclass(frozen=True)
class Ingested:
    event_id: uuid.UUID | None
    task_id: str
    created: bool


async def ingest_nylas(
    session: AsyncSession | AsyncConnection,
    *,
    raw: bytes,
    signature: str | None,
    content_encoding: str | None,
    secret: str,
    max_bytes: int,
    stale_after_s: float,
    request_id: str | None = None,
) -> Ingested:
    """Verify the signature over the exact bytes, then INSERT ... ON CONFLICT DO NOTHING.

    Nothing is written unless the signature matches. The caller commits and publishes.
    """
    verify_signature(secret, raw, signature)
    notification = parse_notification(decompress(raw, content_encoding, limit=max_bytes))
    event_id = uuid.uuid4()
    task_id = str(uuid.uuid4())
    created = await events_repo.insert_once(
        session,
        event_id=event_id,
        source=EventSource.nylas,
        type=notification.type,
        external_id=notification.id,
        task_name=PROCESS_TASK,
        task_id=task_id,
        payload=notification.body,
        stale_after_s=stale_after_s,
        request_id=request_id,
    )
    if created:
        return Ingested(event_id=event_id, task_id=task_id, created=True)
    existing = await events_repo.id_by_external_id(session, EventSource.nylas, notification.id)
    return Ingested(event_id=existing, task_id=task_id, created=False)
