"""`postroom.events.process`: apply one stored Nylas notification.

A new message's `classify-message` run (classify, then apply_rules) is started in the same
transaction as the message and then run right here, step by step, through the very same step
code the `postroom.mail.classify` / `apply_rules` tasks use (claim, steps, dead letters). Three
broker hops per message became one: the drain of a webhook burst is bound by per-message
work, and each hop cost a publish, a Redis round trip or two and a task start
(docs/benchmarks.md "Event drain"). Anything the inline run cannot finish goes through the
broker as before: a step to retry is published with its backoff, and if the inline run
itself breaks, the step task is published and the outbox sweeper remains the safety net.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Event
from services.nylas_events import Outcome, process_notification
from worker import dispatch
from worker.app import celery_app
from worker.inline_chain import classify_and_apply
from worker.runtime import runtime
from worker.tasks.base import request_id_of, run_event_task
from worker.tasks.classify import step_work
from worker.workflows import STEP_TASKS, execute_step, publish_all, start_message_chains

log = structlog.get_logger(__name__)
_INLINE = frozenset({STEP_TASKS["classify"], STEP_TASKS["apply_rules"]})


@celery_app.task(name="postroom.events.process", bind=True, max_retries=None)
def process(self: Task, event_id: str) -> dict[str, Any]:
    chains: list[dict[str, Any]] = []

    async def work(session: AsyncSession, event: Event) -> Outcome:
        outcome = await process_notification(session, event=event, nylas=runtime().nylas)
        # A new message gets classify -> apply_rules, committed with it. Not an update: a user
        # who moved a message out of Junk must not see a rule move it straight back.
        new = outcome.message_ids if outcome.result.get("action") == "created" else []
        if new and outcome.tenant_id is not None and outcome.account_id is not None:
            # Loaded by process_notification in this session: no second SELECT.
            account = await session.get(Account, outcome.account_id)
            if account is not None and account.tenant_id == outcome.tenant_id:
                # Classified and ruled here when it can be (worker.inline_chain); the rest
                # goes through the step tasks.
                new = [
                    m
                    for m in new
                    if not await classify_and_apply(
                        session,
                        settings=runtime().settings,
                        parent=event,
                        account=account,
                        message_id=m,
                    )
                ]
        chains[:] = await start_message_chains(
            session,
            parent=event,
            tenant_id=outcome.tenant_id,
            account_id=outcome.account_id,
            message_ids=new,
            stale_after_s=runtime().settings.outbox_stale_after_s,
        )
        return outcome

    result = run_event_task(self, event_id=event_id, work=work)
    for i, job in enumerate(chains):
        try:
            run_chain_inline(self, job)
        except Exception as exc:  # e.g. the database went away between two transactions
            log.warning("inline_chain_failed", error=type(exc).__name__)
            publish_all(self.app, chains[i:])  # a step task picks up where this one stopped
            break
    return result


def run_chain_inline(task: Task, job: dict[str, Any]) -> None:
    """Run one committed `classify-message` run's steps here, as its step tasks would.

    `execute_step` claims the chain event under the step's task id, so a copy of the step
    task published later (by the outbox sweeper or the except branch above) cannot run it twice.
    """
    rt = runtime()
    kwargs = dict(job["kwargs"])
    work = step_work(kwargs["tenant_id"])
    event_id = uuid.UUID(str(job["event_id"]))
    task_name, task_id = job["task_name"], job["task_id"]
    structlog.contextvars.bind_contextvars(chain_event_id=str(event_id))
    while True:
        decision = rt.run(
            execute_step(
                rt,
                task_name=task_name,
                task_id=task_id,
                event_id=event_id,
                redelivered=False,
                kwargs={**kwargs, "event_id": str(event_id)},
                work=work,
            )
        )
        nxt = decision.publish
        if decision.kind == "next" and nxt is not None and nxt["task_name"] in _INLINE:
            task_name, task_id = nxt["task_name"], nxt["task_id"]
            continue
        if nxt is not None:
            dispatch.publish(task.app, **nxt)
        elif decision.kind == "retry":
            # The step task retries it, under the task id its event now holds, after the backoff.
            dispatch.publish(
                task.app,
                task_name=task_name,
                event_id=event_id,
                task_id=task_id,
                kwargs=kwargs,
                request_id=request_id_of(task),
                countdown=decision.countdown,
            )
        return
