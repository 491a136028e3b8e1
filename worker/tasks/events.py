"""`postroom.events.process`: apply one stored Nylas notification."""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Event
from database.task_names import TaskName
from services import metrics
from services.classify.inline import classify_and_apply
from services.events.outcome import Outcome
from services.events.workflows import start_message_chains
from services.nylas import coalesce
from services.nylas.notifications import fetch_truncated, process_notification
from worker.app import celery_app
from worker.batch import batchable, process_batch
from worker.execution import run_task
from worker.runtime import runtime

log = structlog.get_logger(__name__)


@celery_app.task(name=TaskName.process_event.value, bind=True, max_retries=None)
def process(self: Task, event_id: str) -> dict[str, Any]:
    batched: list[str] = []  # the task ids of the messages of events done in this one's batch

    async def work(session: AsyncSession, event: Event, _step: str) -> Outcome:
        rt = runtime()
        if batchable(event):  # with the grant's other waiting message.created (worker.batch)
            done = await process_batch(
                session, leader=event, task_id=self.request.id, settings=rt.settings, db=rt.db
            )
            if done is not None:
                outcome, jobs, batched[:] = done
                outcome.publish = jobs  # after the engine's commit, never after a rollback
                return outcome
        # A truncated message is fetched from Nylas before `session` is first used, so no
        # transaction is open while Nylas answers; everything else commits with the event.
        fetched = await fetch_truncated(rt.db, event=event, nylas=rt.nylas)
        # Waiting message.updated siblings: apply the newest state once, for all of them.
        group = await coalesce.take_group(rt.db, event, lease_s=rt.settings.claim_lease_s)
        applied = group.applied
        if fetched is None and applied.id != event.id:
            # Rare: a newer sibling left its body out where this one did not. Fetched by the
            # message's id, Nylas answers its current state, newer than every sibling; the
            # siblings are absorbed (no lock held), and `session` is still unused here.
            fetched = await fetch_truncated(rt.db, event=applied, nylas=rt.nylas)
        try:
            outcome = await process_notification(
                session, event=applied, nylas_configured=rt.nylas is not None, fetched=fetched
            )
        finally:  # the tenant is known even when the work fails (its dead letter is theirs)
            event.tenant_id = applied.tenant_id or event.tenant_id
            event.account_id = applied.account_id or event.account_id
        await coalesce.finish_group(
            session, group, event=event, tenant_id=outcome.tenant_id, account_id=outcome.account_id
        )
        outcome.result = coalesce.annotate(outcome.result, group)
        if group.coalesced:
            metrics.EVENTS_COALESCED.inc(len(group.coalesced))
        # A new message gets classify -> apply_rules, committed with it. Not an update: a user
        # who moved a message out of Junk must not see a rule move it straight back.
        new = outcome.message_ids if outcome.result.get("action") == "created" else []
        if new and outcome.tenant_id is not None and outcome.account_id is not None:
            # Classified and ruled in this transaction when every matching rule is local
            # (services.classify.inline): one task a message instead of three. The rest start the
            # classify-message run through the step tasks, as before.
            account = await session.get(Account, outcome.account_id)
            if account is not None and account.tenant_id == outcome.tenant_id:
                new = [
                    m
                    for m in new
                    if not await classify_and_apply(
                        session, parent=event, account=account, message_id=m
                    )
                ]
        outcome.publish = await start_message_chains(
            session,
            parent=event,
            tenant_id=outcome.tenant_id,
            account_id=outcome.account_id,
            message_ids=new,
            stale_after_s=runtime().settings.outbox_stale_after_s,
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
