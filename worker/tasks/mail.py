"""`postroom.mail.sync_account` and `postroom.mail.delete`: thin wrappers over services."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.task_names import TaskName
from services.events.outcome import Outcome
from services.sync.jobs import delete_job_part, sync_part
from worker.app import celery_app
from worker.execution import run_task
from worker.runtime import runtime


@celery_app.task(name=TaskName.sync_account.value, bind=True, max_retries=None)
def sync_account(
    self: Task,
    event_id: str,
    account_id: str,
    tenant_id: str,
    user_id: str,
    folder: str | None = None,
    full: bool = False,
    workflow: str | None = None,
) -> dict[str, Any]:
    def report(meta: dict[str, Any]) -> None:
        self.update_state(state="PROGRESS", meta=meta)

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        return await sync_part(
            session,
            event,
            rt=runtime(),
            tenant=uuid.UUID(tenant_id),
            account_uuid=uuid.UUID(account_id),
            folder=folder,
            full=full,
            workflow=workflow,
            report=report,
        )

    # The first step of a workflow chain: the engine hands the event on to the next step.
    return run_task(self, event_id=event_id, work=work, step=bool(workflow))


@celery_app.task(name=TaskName.delete.value, bind=True, max_retries=None)
def delete(
    self: Task,
    event_id: str,
    message_ids: list[str],
    tenant_id: str,
    user_id: str,
    permanent: bool = False,
) -> dict[str, Any]:
    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        return await delete_job_part(
            session,
            event,
            rt=runtime(),
            tenant=uuid.UUID(tenant_id),
            message_ids=message_ids,
            permanent=permanent,
        )

    return run_task(self, event_id=event_id, work=work)
