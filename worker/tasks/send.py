"""`postroom.mail.send`: send one message for an event, at most once.

The task message carries ids only; what to send (recipients, subject, bodies, attachment ids)
is the event's `send_draft` row, read on every attempt, retry and replay. Errors leave the
task with the draft's addresses, names, subject and bodies cut out (`redact_error`), because
their text reaches the event, the dead letter, the logs and the result backend.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.task_names import TaskName
from services.events.outcome import Outcome
from services.outbound.send_job import send_job
from worker import policy
from worker.app import celery_app
from worker.execution import run_task
from worker.runtime import runtime

ID_KWARGS = ("event_id", "account_id", "tenant_id", "user_id")


@celery_app.task(name=TaskName.send.value, bind=True, max_retries=None)
def send(
    self: Task,
    event_id: str,
    account_id: str,
    tenant_id: str,
    user_id: str,
    **legacy: Any,
) -> dict[str, Any]:
    if legacy and isinstance(self.request.kwargs, dict):
        # A message queued before drafts moved to the database still carries the mail: the
        # draft was copied out of its event by migration 0004, and the copy in this request is
        # dropped so a Celery retry, the dead letter and the result backend never see it.
        for key in list(self.request.kwargs):
            if key not in ID_KWARGS:
                del self.request.kwargs[key]

    async def work(_session: AsyncSession, event: Event, _step: str) -> Outcome:
        rt = runtime()
        return await send_job(
            rt.db,
            settings=rt.settings,
            nylas=rt.nylas,
            event=event,
            tenant_id=uuid.UUID(tenant_id),
            account_id=uuid.UUID(account_id),
            is_transient=policy.is_transient,
        )

    return run_task(
        self,
        event_id=event_id,
        work=work,
        kwargs={
            "account_id": account_id,
            "tenant_id": tenant_id,
            "user_id": user_id,
        },
    )
