"""`postroom.events.process`: apply one stored Nylas notification."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from services.nylas_events import Outcome, process_notification
from worker.app import celery_app
from worker.runtime import runtime
from worker.tasks.base import run_event_task


@celery_app.task(name="postroom.events.process", bind=True, max_retries=None)
def process(self: Task, event_id: str) -> dict[str, Any]:
    async def work(session: AsyncSession, event: Event) -> Outcome:
        return await process_notification(session, event=event, nylas=runtime().nylas)

    return run_event_task(self, event_id=event_id, work=work)
