"""Periodic sync: one sync event per due account, never two unfinished at once per account."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from database.engine import Database
from database.models import EventSource
from database.repositories import events as events_repo
from database.repositories import sync_schedule as schedule_repo

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
    jobs: list[tuple[uuid.UUID, str, dict[str, Any]]] = []
    async with db.transaction() as s:
        accounts = await schedule_repo.lock_due_accounts(s, limit=limit)
        for account in accounts:
            event_id = uuid.uuid4()
            task_id = str(event_id)
            # One event per account and interval slot: a second beat tick in the same slot
            # finds the external id taken even if the locks did not keep it out.
            slot = int(datetime.now(UTC).timestamp()) // max(account.sync_interval_s, 1)
            kwargs = {
                "account_id": str(account.id),
                "tenant_id": str(account.tenant_id),
                "user_id": str(account.user_id),
                "folder": None,
                "full": False,
            }
            created = await events_repo.insert_once(
                s,
                event_id=event_id,
                source=EventSource.schedule,
                type="account.sync",
                external_id=f"sync:{account.id}:{slot}",
                task_name=schedule_repo.SYNC_TASK,
                task_id=task_id,
                payload={"kind": "account.sync", "kwargs": kwargs},
                stale_after_s=stale_after_s,
                task_kwargs=kwargs,
                tenant_id=account.tenant_id,
                user_id=account.user_id,
                account_id=account.id,
            )
            if created:
                jobs.append((event_id, task_id, kwargs))
    published = sum(
        1
        for event_id, task_id, kwargs in jobs
        if publish(
            task_name=schedule_repo.SYNC_TASK, event_id=event_id, task_id=task_id, kwargs=kwargs
        )
    )
    return ScheduleResult(due=len(accounts), queued=len(jobs), published=published)
