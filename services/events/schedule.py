"""Periodic sync: one sync event per due account, never two unfinished at once per account."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from database.engine import Database
from database.models import EventSource
from database.repositories.accounts import sync_schedule as schedule_repo
from database.task_names import TaskName
from services.events.unit_of_work import Job, record_event

Publish = Callable[..., bool]


@dataclass
class ScheduleResult:
    due: int
    queued: int
    published: int


async def enqueue_due_syncs(
    db: Database,
    *,
    publish: Publish,
    stale_after_s: float,
    limit: int = 500,
) -> ScheduleResult:
    """Record a sync event for each due account, commit, then publish them."""
    jobs: list[Job] = []
    async with db.transaction() as s:
        accounts = await schedule_repo.lock_due_accounts(s, limit=limit)
        for account in accounts:
            event_id = uuid.uuid4()
            # One event per account and interval slot: a second beat tick in the same slot
            # finds the external id taken even if the locks did not keep it out.
            slot = int(datetime.now(UTC).timestamp()) // max(account.sync_interval_s, 1)
            job = await record_event(
                s,
                task_name=TaskName.sync_account,
                kwargs={
                    "account_id": str(account.id),
                    "tenant_id": str(account.tenant_id),
                    "user_id": str(account.user_id),
                    "folder": None,
                    "full": False,
                },
                source=EventSource.schedule,
                type="account.sync",
                external_id=f"sync:{account.id}:{slot}",
                stale_after_s=stale_after_s,
                tenant_id=account.tenant_id,
                user_id=account.user_id,
                account_id=account.id,
                event_id=event_id,
                task_id=str(event_id),
            )
            if job is not None:
                jobs.append(job)
    published = sum(1 for job in jobs if publish(**job.fields()))
    return ScheduleResult(due=len(accounts), queued=len(jobs), published=published)
