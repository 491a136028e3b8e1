"""Publishing by task name: what the API and the outbox use, without importing task code."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from celery import Celery

from worker.config import route_for

log = structlog.get_logger(__name__)


def publish(
    app: Celery,
    *,
    task_name: str,
    event_id: uuid.UUID,
    task_id: str,
    kwargs: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> bool:
    """Send the task for an event; False (logged) when the broker cannot take it right now.

    No retries here: the event is already committed, and the outbox sweeper publishes any
    event that was not picked up in time.
    """
    route = route_for(task_name)
    try:
        app.send_task(
            task_name,
            kwargs={**(kwargs or {}), "event_id": str(event_id)},
            task_id=task_id,
            queue=route.queue.value,
            priority=route.priority,
            headers={"request_id": request_id} if request_id else None,
            retry=False,
        )
    except Exception as exc:  # the broker is down or slow: the outbox will deliver later
        log.warning(
            "publish_failed", task=task_name, event_id=str(event_id), error=type(exc).__name__
        )
        return False
    return True
