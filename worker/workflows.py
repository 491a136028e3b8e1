"""Workflows: chains of tasks over one event row, each step handing the event to the next.

Why not Celery's `chain()`: its plan travels inside the message, so a step that dies for good
loses the rest of the chain with it; replaying "from the failed step" then means rebuilding a
signature by hand, and error callbacks on nested or joined chains have been lost (Celery
issues 4232, 4763) while retries inside a chain duplicated links (2759). Here the plan is the
event's `steps` column. A step runs as an ordinary event-backed task; when it succeeds, the
same transaction marks it done and re-queues the event under the next step's task name, and
the new task is published after the commit (the outbox sweeper re-publishes it if that
publish is lost). A step that fails for good leaves a dead letter naming the step and the run
(the event id), and the event keeps the failed step's task name, so replaying it runs that
step again, not the chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventStatus
from database.repositories import accounts as accounts_repo
from database.repositories import events as events_repo
from database.repositories import workflows as repo
from services.imap_slots import AccountBusy
from services.nylas_events import Outcome
from worker import dispatch, policy
from worker.config import route_for
from worker.execution import (
    CONTINUED,
    LostClaim,
    continuation_id,
    record_dead_letter,
    shown_message,
    slot_wait_s,
)
from worker.lease import kept_claim
from worker.runtime import Runtime, runtime
from worker.tasks.base import TaskDead, request_id_of

log = structlog.get_logger(__name__)

# The step a task runs when its event is not part of a workflow.
STEP_TASKS: dict[str, str] = {
    "sync": "postroom.mail.sync_account",
    "classify": "postroom.mail.classify",
    "apply_rules": "postroom.mail.apply_rules",
    "move_spam_to_junk": "postroom.mail.apply_rules",
}
# Kept in step with services.jobs.WORKFLOWS (the API's list); `classify-message` is the chain
# every new message from a webhook or a sync runs, not started through the API.
PLANS: dict[str, list[str]] = {
    "sync-and-classify": ["sync", "classify"],
    "triage": ["sync", "classify", "move_spam_to_junk"],
    "classify-message": ["classify", "apply_rules"],
    "classify-new": ["classify", "apply_rules"],
}
DEFAULT_STEP = {
    "postroom.mail.classify": "classify",
    "postroom.mail.apply_rules": "apply_rules",
    "postroom.mail.sync_account": "sync",
}

StepWork = Callable[[AsyncSession, Event, str], Awaitable[Outcome]]


@dataclass
class StepDecision:
    kind: str  # "done" | "next" | "retry" | "skip" | "dead"
    result: dict[str, Any]
    countdown: float | None = None
    error: BaseException | None = None
    publish: dict[str, Any] | None = None


def plan_for(event: Event, task_name: str) -> list[dict[str, Any]]:
    """The event's steps, made from its workflow's plan (or the task alone) on first run."""
    if event.steps:
        return [dict(s) for s in event.steps]
    names = PLANS.get(str((event.task_kwargs or {}).get("workflow")), [DEFAULT_STEP[task_name]])
    return [{"name": n, "task": STEP_TASKS[n], "state": "pending", "attempts": 0} for n in names]


def _current(steps: list[dict[str, Any]]) -> int:
    """The first step not done; a replay of a finished run runs the whole plan again."""
    for i, step in enumerate(steps):
        if step["state"] != "succeeded":
            return i
    for step in steps:
        step["state"] = "pending"
    return 0


async def start_message_chains(
    session: AsyncSession,
    *,
    parent: Event,
    tenant_id: uuid.UUID | None,
    account_id: uuid.UUID | None,
    message_ids: list[uuid.UUID],
    stale_after_s: float,
) -> list[dict[str, Any]]:
    """In the parent's transaction: one `classify-message` run per new or changed message.

    Returns what to publish after the commit. The external id makes a re-run of the parent
    (a redelivered notification) start no second chain for the same message.
    """
    if not message_ids or tenant_id is None or account_id is None:
        return []
    account = await accounts_repo.get_for_tenant(session, tenant_id, account_id)
    if account is None:
        return []
    jobs = []
    for message_id in message_ids:
        event_id, task_id = uuid.uuid4(), str(uuid.uuid4())
        kwargs = {
            "message_id": str(message_id),
            "tenant_id": str(account.tenant_id),
            "user_id": str(account.user_id),
            "workflow": "classify-message",
        }
        created = await events_repo.insert_once(
            session,
            event_id=event_id,
            source=parent.source,
            type="workflow.classify-message",
            external_id=f"{parent.id}:classify:{message_id}",
            task_name=STEP_TASKS["classify"],
            task_id=task_id,
            payload={"parent_event_id": str(parent.id), "kwargs": kwargs},
            stale_after_s=stale_after_s,
            task_kwargs=kwargs,
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            account_id=account.id,
            request_id=parent.request_id,
        )
        if created:
            jobs.append(
                {
                    "task_name": STEP_TASKS["classify"],
                    "event_id": event_id,
                    "task_id": task_id,
                    "kwargs": kwargs,
                    "request_id": parent.request_id,
                }
            )
    return jobs


async def execute_step(
    rt: Runtime,
    *,
    task_name: str,
    task_id: str,
    event_id: uuid.UUID,
    redelivered: bool,
    kwargs: dict[str, Any],
    work: StepWork,
) -> StepDecision:
    lease = rt.settings.claim_lease_s  # renewed while the step runs (worker.lease)
    async with rt.db.transaction() as session:
        event = await events_repo.claim(
            session, event_id=event_id, task_id=task_id, lease_s=lease, redelivered=redelivered
        )
        if event is not None:
            steps = plan_for(event, task_name)
            i = _current(steps)
            steps[i].update(
                state="running",
                attempts=int(steps[i].get("attempts", 0)) + 1,
                task_id=task_id,
                error=None,
            )
            await repo.set_steps(session, event_id=event.id, task_id=task_id, steps=steps)
    if event is None:
        return StepDecision("skip", {"status": "skipped", "reason": "already taken or finished"})
    name = steps[i]["name"]
    structlog.contextvars.bind_contextvars(
        event_id=str(event.id), step=name, tenant_id=str(event.tenant_id or "")
    )
    try:
        async with (
            kept_claim(rt, event_id=event.id, task_id=task_id),
            rt.db.transaction() as session,
        ):
            outcome = await work(session, event, name)
            if outcome.status == CONTINUED:
                # A bounded part of the step (a long sync): the step stays running and the
                # event goes on to the next part, as in worker.execution; a part is not an
                # attempt of the step.
                steps[i].update(state="running", attempts=steps[i]["attempts"] - 1)
                next_id = continuation_id(event.id)
                owned = await repo.set_steps(
                    session, event_id=event.id, task_id=task_id, steps=steps
                ) and await events_repo.continue_with(
                    session,
                    event=event,
                    task_id=task_id,
                    next_task_id=next_id,
                    result=outcome.result,
                    stale_after_s=rt.settings.outbox_stale_after_s,
                )
                if not owned:
                    raise LostClaim(f"event {event.id} was taken over by another run")
                return StepDecision(
                    "next",
                    outcome.result,
                    publish={
                        "task_name": task_name,
                        "event_id": event.id,
                        "task_id": next_id,
                        "kwargs": dict(event.task_kwargs or {}),
                        "request_id": event.request_id,
                    },
                )
            steps[i].update(state=outcome.status, result=outcome.result)
            last = i == len(steps) - 1 or outcome.status != EventStatus.succeeded
            if last:
                for later in steps[i + 1 :]:
                    later["state"] = "skipped"
                result = {**outcome.result, "steps": {s["name"]: s["state"] for s in steps}}
                owned = await repo.set_steps(
                    session, event_id=event.id, task_id=task_id, steps=steps
                )
                owned = owned and await events_repo.finish(
                    session,
                    event=event,
                    task_id=task_id,
                    status=EventStatus(outcome.status),
                    result=result if len(steps) > 1 else outcome.result,
                    error=outcome.reason,
                    tenant_id=outcome.tenant_id,
                    account_id=outcome.account_id,
                )
                decision = StepDecision("done", result if len(steps) > 1 else outcome.result)
            else:
                nxt = steps[i + 1]
                next_id = f"{event.id}.{nxt['name']}.{uuid.uuid4().hex[:8]}"
                owned = await repo.hand_on(
                    session,
                    event=event,
                    task_id=task_id,
                    steps=steps,
                    next_task_name=nxt["task"],
                    next_task_id=next_id,
                    result=outcome.result,
                    stale_after_s=rt.settings.outbox_stale_after_s,
                )
                decision = StepDecision(
                    "next",
                    outcome.result,
                    publish={
                        "task_name": nxt["task"],
                        "event_id": event.id,
                        "task_id": next_id,
                        "kwargs": dict(event.task_kwargs or {}),
                        "request_id": event.request_id,
                    },
                )
            if not owned:
                raise LostClaim(f"event {event.id} was taken over by another run")
        log.info("step_finished", step=name, status=outcome.status)
        return decision
    except LostClaim:
        return StepDecision("skip", {"status": "skipped", "reason": "taken over"})
    except Exception as exc:
        return await _fail(
            rt,
            event=event,
            steps=steps,
            i=i,
            task_name=task_name,
            task_id=task_id,
            kwargs=kwargs,
            exc=exc,
        )


async def _fail(
    rt: Runtime,
    *,
    event: Event,
    steps: list[dict[str, Any]],
    i: int,
    task_name: str,
    task_id: str,
    kwargs: dict[str, Any],
    exc: BaseException,
) -> StepDecision:
    message = shown_message(exc)
    error = f"{type(exc).__name__}: {message}"
    step = steps[i]
    busy = isinstance(exc, AccountBusy)  # only waited for an IMAP slot: not an attempt
    if busy:
        step["attempts"] -= 1
    if busy or (
        policy.is_transient(exc) and step["attempts"] - 1 < route_for(task_name).max_retries
    ):
        countdown = (
            slot_wait_s()
            if busy
            else policy.backoff_s(step["attempts"], rt.settings, hint=policy.retry_after(exc))
        )
        step.update(state="retrying", error=error)
        try:
            async with rt.db.transaction() as session:
                await repo.set_steps(session, event_id=event.id, task_id=task_id, steps=steps)
                await events_repo.finish(
                    session,
                    event=event,
                    task_id=task_id,
                    status=EventStatus.retrying,
                    error=error,
                    retry_in_s=countdown,
                )
                if busy:
                    await events_repo.uncount_attempt(session, event_id=event.id)
        except Exception as record_exc:  # the database itself may be what failed
            log.warning("retry_not_recorded", error=type(record_exc).__name__)
        return StepDecision("retry", {}, countdown=countdown, error=exc)
    log.error("step_dead", step=step["name"], error=type(exc).__name__, message=message)
    step.update(state="dead", error=error)
    async with rt.db.transaction() as session:
        await record_dead_letter(
            session,
            event=event,
            task_name=task_name,
            task_id=task_id,
            exc=exc,
            args=[],
            kwargs=kwargs,
            attempts=step["attempts"],
            step=step["name"],
        )
        await repo.set_steps(session, event_id=event.id, task_id=task_id, steps=steps)
        await events_repo.finish(
            session, event=event, task_id=task_id, status=EventStatus.dead, error=error
        )
    return StepDecision("dead", {"status": "dead", "error": message}, error=exc)


async def start_account_chain(
    session: AsyncSession,
    *,
    parent: Event,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    account_id: uuid.UUID,
    stale_after_s: float,
) -> list[dict[str, Any]]:
    """In a sync's transaction: one `classify-new` run over the account's unclassified mail.

    One run per sync, not one per message: a first sync of 100,000 messages must not become
    100,000 events. Returns what to publish after the commit.
    """
    event_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    kwargs = {
        "account_id": str(account_id),
        "tenant_id": str(tenant_id),
        "user_id": str(user_id) if user_id else None,
        "workflow": "classify-new",
    }
    created = await events_repo.insert_once(
        session,
        event_id=event_id,
        source=parent.source,
        type="workflow.classify-new",
        external_id=f"{parent.id}:classify-new:{parent.attempts}",
        task_name=STEP_TASKS["classify"],
        task_id=task_id,
        payload={"parent_event_id": str(parent.id), "kwargs": kwargs},
        stale_after_s=stale_after_s,
        task_kwargs=kwargs,
        tenant_id=tenant_id,
        user_id=user_id,
        account_id=account_id,
        request_id=parent.request_id,
    )
    if not created:
        return []
    return [
        {
            "task_name": STEP_TASKS["classify"],
            "event_id": event_id,
            "task_id": task_id,
            "kwargs": kwargs,
            "request_id": parent.request_id,
        }
    ]


def publish_all(app: Any, jobs: list[dict[str, Any]]) -> None:
    """After the commit; a lost publish is picked up by the outbox sweeper."""
    for job in jobs:
        dispatch.publish(app, **job)


def run_step_task(
    task: Task, *, event_id: str, work: StepWork, kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a task calls to run its step of a workflow (or its single step)."""
    rt = runtime()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=request_id_of(task), task_id=task.request.id, task=task.name, event_id=event_id
    )
    delivery = task.request.delivery_info or {}
    decision = rt.run(
        execute_step(
            rt,
            task_name=task.name,
            task_id=task.request.id,
            event_id=uuid.UUID(event_id),
            redelivered=bool(delivery.get("redelivered")),
            kwargs={**(kwargs or {}), "event_id": event_id},
            work=work,
        )
    )
    if decision.publish is not None:
        dispatch.publish(task.app, **decision.publish)
    if decision.kind == "retry":
        raise task.retry(countdown=decision.countdown, exc=decision.error, max_retries=None)
    if decision.kind == "dead":
        raise TaskDead(f"{type(decision.error).__name__}: {decision.result.get('error')}") from None
    return decision.result
