"""Webhook ingest: verify, parse and store a Nylas notification exactly once."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import asyncpg

from database.models import EventSource
from database.repositories.events import rows as events_repo
from database.task_names import TaskName
from services.errors import BadRequest
from services.events.unit_of_work import Job
from services.events.webhooks import (
    check_time_window,
    decompress,
    parse_notification,
    verify_signature,
)

UNTRANSLATABLE_CHARACTER = "22P05"


@dataclass(frozen=True)
class Ingested:
    event_id: uuid.UUID | None
    task_id: str
    created: bool
    type: str
    # The grant the notification names: its lane until the worker learns the tenant.
    lane_key: str | None = None
    request_id: str | None = None

    @property
    def job(self) -> Job | None:
        """What to publish once stored: only a notification seen for the first time."""
        if not self.created or self.event_id is None:
            return None
        return Job(
            TaskName.process_event,
            self.event_id,
            self.task_id,
            request_id=self.request_id,
            lane=self.lane_key,
        )


async def ingest_nylas(
    pool: asyncpg.Pool,
    *,
    raw: bytes,
    signature: str | None,
    content_encoding: str | None,
    secret: str,
    max_bytes: int,
    stale_after_s: float,
    max_age_s: int,
    request_id: str | None = None,
) -> Ingested:
    """Verify the signature over the exact bytes, then INSERT ... ON CONFLICT DO NOTHING.

    Nothing is written unless the signature matches; each statement on `pool` (the driver
    pool, database.engine.driver_pool) commits by itself. The caller publishes.
    """
    verify_signature(secret, raw, signature)
    body = decompress(raw, content_encoding, limit=max_bytes)
    notification = parse_notification(body)
    check_time_window(notification.body, now=time.time(), max_age_s=max_age_s)
    event_id = uuid.uuid4()
    task_id = str(uuid.uuid4())
    try:
        created = await events_repo.insert_webhook_event(
            pool,
            event_id=event_id,
            source=EventSource.nylas,
            type=notification.type,
            external_id=notification.id,
            task_name=TaskName.process_event,
            task_id=task_id,
            # parse_notification() decoded it as UTF-8 JSON already, so this cannot fail.
            payload_json=body.decode(),
            stale_after_s=stale_after_s,
            request_id=request_id,
        )
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) != UNTRANSLATABLE_CHARACTER:
            raise
        # \u0000 has no place in jsonb.
        raise BadRequest("The body contains a NUL character (\\u0000).") from None
    if created:
        data = notification.body.get("data")
        grant = data.get("grant_id") if isinstance(data, dict) else None
        return Ingested(
            event_id=event_id,
            task_id=task_id,
            created=True,
            type=notification.type,
            lane_key=grant if isinstance(grant, str) else None,
            request_id=request_id,
        )
    existing = await events_repo.webhook_event_id(pool, EventSource.nylas, notification.id)
    return Ingested(event_id=existing, task_id=task_id, created=False, type=notification.type)
