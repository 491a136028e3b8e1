"""`postroom.events.process`: apply one stored Nylas notification."""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.task_names import TaskName
from services.nylas_events import Outcome, process_notification
from services.unit_of_work import Job
from services.workflows import start_message_chains
from worker.app import celery_app
from worker.execution import publish_all, run_task
from worker.runtime import runtime


@celery_app.task(name=TaskName.process_event.value, bind=True, max_retries=None)
def process(self: Task, event_id: str) -> dict[str, Any]:
    chains: list[Job] = []

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        outcome = await process_notification(session, event=event, nylas=runtime().nylas)
        # A new message gets classify -> apply_rules, committed with it. Not an update: a user
        # who moved a message out of Junk must not see a rule move it straight back.
        new = outcome.message_ids if outcome.result.get("action") == "created" else []
        chains[:] = await start_message_chains(
            session,
            parent=event,
            tenant_id=outcome.tenant_id,
            account_id=outcome.account_id,
            message_ids=new,
            stale_after_s=runtime().settings.outbox_stale_after_s,
        )
        return outcome

    result = run_task(self, event_id=event_id, work=work)
    publish_all(self.app, chains)
    return result
