"""`postroom.mail.classify` and `postroom.mail.apply_rules`: workflow steps (worker.execution)."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.task_names import TaskName
from services.classify.service import refit_job
from services.classify.steps import run_step
from services.classify.tenant import refit_when_due
from services.events.outcome import Outcome
from worker import dispatch
from worker.app import celery_app
from worker.execution import run_task
from worker.runtime import runtime


def _run_step(
    task: Task,
    tenant_id: str,
    user_id: str,
    event_id: str,
    message_id: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Both tasks run whichever step the event says is next (classify or a rules step)."""

    async def work(session: AsyncSession, event: Event, step: str) -> Outcome:
        # The engine checked the task's tenant against its event before this runs.
        return await run_step(session, event, step, rt=runtime(), tenant_id=uuid.UUID(tenant_id))

    return run_task(
        task,
        event_id=event_id,
        work=work,
        kwargs={"message_id": message_id, "tenant_id": tenant_id, "user_id": user_id, **extra},
        step=True,
    )


@celery_app.task(name=TaskName.classify.value, bind=True, max_retries=None)
def classify(
    self: Task,
    tenant_id: str,
    user_id: str,
    event_id: str,
    message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return _run_step(self, tenant_id, user_id, event_id, message_id, extra)


@celery_app.task(name=TaskName.apply_rules.value, bind=True, max_retries=None)
def apply_rules(
    self: Task,
    tenant_id: str,
    user_id: str,
    event_id: str,
    message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return _run_step(self, tenant_id, user_id, event_id, message_id, extra)


@celery_app.task(name=TaskName.refit_tenant.value, bind=True, max_retries=0)
def refit_tenant(self: Task, tenant_id: str) -> dict[str, Any]:
    """Refit a tenant's model after its labels changed (tenant.refit_when_due): not
    event-backed, never retried; changes too few and too recent ask again when due."""
    rt = runtime()
    tenant = uuid.UUID(tenant_id)
    done = rt.run(refit_when_due(rt.db, tenant_id=tenant))
    if done.status == "later" and done.later_s is not None:
        dispatch.publish(self.app, **refit_job(tenant).fields(), countdown=done.later_s)
    return {"status": done.status, "generation": done.generation, "later_s": done.later_s}
