"""`postroom.mail.generate_thumbnail`: previews of a sync's new image attachments."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.task_names import TaskName
from services.messages.thumbnails import make_thumbnails
from services.nylas.notifications import Outcome
from worker.app import celery_app
from worker.execution import CONTINUED, run_task
from worker.runtime import runtime


@celery_app.task(name=TaskName.generate_thumbnail.value, bind=True, max_retries=None)
def generate_thumbnail(
    self: Task,
    event_id: str,
    account_id: str,
    tenant_id: str,
    since: str,
    user_id: str | None = None,
) -> dict[str, Any]:
    tenant, account = uuid.UUID(tenant_id), uuid.UUID(account_id)

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        rt = runtime()
        counts, cut = await make_thumbnails(
            rt.db,
            tenant_id=tenant,
            account_id=account,
            since=datetime.fromisoformat(since),
            budget_s=rt.settings.bulk_part_s,
        )
        # A cut part hands the job on: the next part finds the images still without a row.
        status = CONTINUED if cut else "succeeded"
        result = {"status": "continued" if cut else "success", **counts}
        return Outcome(status=status, result=result, tenant_id=tenant, account_id=account)

    return run_task(self, event_id=event_id, work=work)
