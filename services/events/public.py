"""An event as `GET /v1/events/{id}` shows it: the one shaping the API routes and the
`job.failed` tenant event share, so the two cannot drift."""

from __future__ import annotations

from typing import Any

from database.models import Event, EventStatus


def event_fields(e: Event) -> dict[str, Any]:
    """The event's public fields (timestamps still datetimes)."""
    return {
        "id": str(e.id),
        "source": e.source,
        "type": e.type,
        "external_id": e.external_id,
        "status": e.status,
        "attempts": e.attempts,
        "task_ids": list(e.task_ids or []),
        "last_error": e.last_error,
        "received_at": e.received_at,
        "finished_at": e.finished_at,
        "send_at": e.not_before,
        "coalesced_into": (e.result or {}).get("coalesced_into")
        if e.status == EventStatus.succeeded
        else None,
    }
