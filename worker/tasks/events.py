"""`postroom.events.process`: apply one stored Nylas notification."""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.task_names import TaskName
from services import metrics
from services.events.outcome import Outcome
from services.nylas.process import process_event
from worker.app import celery_app
from worker.execution import run_task
from worker.runtime import runtime

log = structlog.get_logger(__name__)


@celery_app.task(name=TaskName.process_event.value, bind=True, max_retries=None)
def process(self: Task, event_id: str) -> dict[str, Any]:
    batched: list[str] = []  # the task ids of the messages of events done in this one's batch

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        outcome, batched[:] = await process_event(
            session, event, rt=runtime(), task_id=self.request.id
        )
        return outcome

    result = run_task(self, event_id=event_id, work=work)
    if batched and result.get("batched"):
        metrics.EVENTS_BATCHED.inc(int(result["batched"]))
        revoke_batched(self.app, batched)
    return result


def revoke_batched(app: Any, task_ids: list[str]) -> None:
    """After the commit: the messages of the events done in this batch need not run. A
    courtesy, never relied on, as for a cancel (services.events.cancel.revoke_tasks): each
    worker drops those it has not started when they arrive, instead of handing each to a
    child for a claim that finds its event finished. One broadcast per batch; a worker that
    misses it runs the claim."""
    try:
        app.control.revoke(task_ids)
    except Exception as exc:  # the broker being away must not fail a committed batch
        log.warning("revoke_failed", error=type(exc).__name__, tasks=len(task_ids))
