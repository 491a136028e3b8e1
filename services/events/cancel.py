"""POST /v1/events/{id}/cancel: stop a job that has not started (API.md "Events")."""

from __future__ import annotations

import asyncio
import uuid

import structlog
from celery import Celery

from database.models import Event
from database.repositories.events import cancel as event_cancel
from database.repositories.events import rows as events_repo
from services.errors import Conflict, NotFound
from services.events.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


async def cancel_event(uow: UnitOfWork, *, tenant_id: uuid.UUID, event_id: uuid.UUID) -> Event:
    """Cancel the tenant's event while it waits; 404 for another tenant's, 409 once started."""
    event = await event_cancel.cancel(uow.session, tenant_id=tenant_id, event_id=event_id)
    if event is not None:
        return event
    existing = await events_repo.get_for_tenant(uow.session, tenant_id, event_id)
    if existing is None:
        raise NotFound("No such event.")
    raise Conflict(
        f"The event is {existing.status}; only a scheduled, received, queued or retrying "
        "event can be cancelled."
    )


async def revoke_tasks(celery: Celery, event: Event) -> None:
    """Ask the workers to drop the event's task ids: a courtesy, never relied on (the claim
    refuses a cancelled event whatever the broker still holds)."""
    task_ids = [str(t) for t in event.task_ids or []]
    if not task_ids:
        return
    try:
        # control.revoke publishes to the broker synchronously: keep it off the event loop.
        await asyncio.wait_for(asyncio.to_thread(celery.control.revoke, task_ids), timeout=2)
    except Exception as exc:  # the broker being away must not fail a committed cancel
        log.warning("revoke_failed", event_id=str(event.id), error=type(exc).__name__)
