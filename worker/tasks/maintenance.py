"""Beat tasks: the outbox sweeper and housekeeping. Not event-backed, never retried."""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Task

from database.task_names import TaskName
from services.events import outbox
from worker import dispatch
from worker.app import celery_app
from worker.runtime import runtime


@celery_app.task(name=TaskName.sweep_outbox.value, bind=True, max_retries=0)
def sweep_outbox(self: Task) -> dict[str, Any]:
    rt = runtime()
    result = rt.run(
        outbox.sweep(
            rt.db,
            publish=partial(dispatch.publish, self.app),
            stale_after_s=rt.settings.outbox_stale_after_s,
        )
    )
    return {"found": result.found, "published": result.published}


@celery_app.task(name=TaskName.cleanup.value, bind=True, max_retries=0)
def cleanup(self: Task) -> dict[str, Any]:
    from services.messages.thumbnails import purge_deleted

    rt = runtime()
    deleted = rt.run(outbox.cleanup(rt.db, retention_days=rt.settings.event_retention_days))
    # Thumbnails go with their message: a deleted message's previews are not kept.
    thumbnails = rt.run(purge_deleted(rt.db))
    return {"deleted_events": deleted, "deleted_thumbnails": thumbnails}


@celery_app.task(name=TaskName.periodic_sync.value, bind=True, max_retries=0)
def periodic_sync(self: Task) -> dict[str, Any]:
    from services.events.schedule import enqueue_due_syncs

    rt = runtime()
    result = rt.run(
        enqueue_due_syncs(
            rt.db,
            publish=partial(dispatch.publish, self.app),
            stale_after_s=rt.settings.outbox_stale_after_s,
        )
    )
    return {"due": result.due, "queued": result.queued, "published": result.published}


@celery_app.task(name=TaskName.reconcile.value, bind=True, max_retries=0)
def reconcile(self: Task) -> dict[str, Any]:
    """Backfill Nylas messages that a lost webhook never announced (NYLAS.md section 4)."""
    from services.nylas.sync import reconcile as reconcile_accounts

    rt = runtime()
    return rt.run(reconcile_accounts(rt.db, nylas=rt.nylas))
