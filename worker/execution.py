"""The one execution engine: claim -> work -> finish | hand on | retry | dead-letter.

Every event-backed task runs through `execute`, a single task as much as a workflow step:
a single task is a plan of one step that is not stored (worker.workflows.Steps), a workflow
step is one step of the plan in the event's `steps` column. So both get the same answer to
a database outage during the claim (retry the message soon), the same tenant check (the
task message's tenant must own its event), the same retry budget (attempts of the step
since it last started afresh or was replayed, against the task's route) and the same
redelivery rule for a retry (see `run_task`).

The work and the event's final state commit in one transaction, so a worker that dies
mid-way leaves either nothing or everything. Failures go through `worker.policy`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from celery import Task
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventStatus
from database.repositories.events import lifecycle
from services.errors import PermissionDenied, PostroomError
from services.events import absorbed, dead_letters
from services.events.dead_letters import shown_message
from services.events.outcome import CONTINUED, Outcome
from services.events.steps import Steps
from services.events.unit_of_work import Job
from services.imap.slots import AccountBusy
from services.nylas.budget import NylasHeldOff
from worker import dispatch, policy
from worker.config import route_for
from worker.lease import kept_claim
from worker.observability import request_id_of
from worker.runtime import Runtime, runtime

log = structlog.get_logger(__name__)

# The work of one attempt, in the transaction that also records its outcome. The third
# argument is the workflow step being run ("" for a task that is not a workflow step).
Work = Callable[[AsyncSession, Event, str], Awaitable[Outcome]]


def continuation_id(event_id: uuid.UUID) -> str:
    """The task id of a job's next part: unique, and readable as such in Flower."""
    return f"{event_id}.part.{uuid.uuid4().hex[:8]}"


class LostClaim(Exception):
    """Another run took the event over while this one was working."""


class TaskDead(Exception):
    """The task failed for good; its dead letter holds the details."""


@dataclass
class Decision:
    kind: str  # "done" | "next" | "retry" | "skip" | "dead"
    result: dict[str, Any]
    countdown: float | None = None
    error: BaseException | None = None
    # Published after the commit, never after a rollback: the next part or step ("next") and
    # the task messages of events the work inserted (Outcome.publish).
    publish: list[Job] = field(default_factory=list)


def check_tenant(event: Event, kwargs: dict[str, Any]) -> None:
    """A task message naming another tenant than its event is refused before any work."""
    claimed = kwargs.get("tenant_id")
    if event.tenant_id is not None and claimed is not None and str(claimed) != str(event.tenant_id):
        raise PermissionDenied("The task's tenant does not own its event.")


def retries_used(event: Event) -> int:
    """Attempts before this one since the last replay: a replay grants a fresh retry budget.

    Attempts that died with their worker count too, so a task that kills its process every
    time still ends as a dead letter instead of looping.
    """
    base = 0
    for entry in event.history or []:
        if entry.get("outcome") == "replayed":
            base = int(entry.get("attempts_before") or 0)
    return max(event.attempts - 1 - base, 0)


class WorkerDied(PostroomError):
    """Attempts past the retry budget that recorded no failure: their workers died."""

    code = "worker_died"


async def execute(
    rt: Runtime,
    *,
    task_name: str,
    task_id: str,
    event_id: uuid.UUID,
    redelivered: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    work: Work,
    stored: bool,
) -> Decision:
    """One attempt of a task (`stored`: a step of the plan in the event's `steps`)."""
    settings = rt.settings
    # Short, and renewed while the work runs (worker.lease): a dead worker's claim runs out
    # within a minute instead of after the task's hard time limit.
    lease = settings.claim_lease_s
    try:
        async with rt.db.transaction() as session:
            event = await lifecycle.claim(
                session, event_id=event_id, task_id=task_id, lease_s=lease, redelivered=redelivered
            )
            steps = (
                await Steps.begin(
                    session, event=event, task_name=task_name, task_id=task_id, stored=stored
                )
                if event is not None
                else None
            )
    except Exception as exc:
        if not policy.is_transient(exc):
            raise
        # The database is away: nothing was claimed, so retry the message itself soon. The
        # event keeps its lease, so the outbox sweeper also covers a retry that gets lost.
        countdown = policy.backoff_s(1, settings)
        log.warning("claim_failed", error=type(exc).__name__, countdown=countdown)
        return Decision("retry", {}, countdown=countdown, error=exc)
    if event is None or steps is None:
        log.info("event_not_claimed", event_id=str(event_id), task_id=task_id)
        return Decision("skip", {"status": "skipped", "reason": "already taken or finished"})
    structlog.contextvars.bind_contextvars(
        event_id=str(event.id),
        task_id=task_id,
        tenant_id=str(event.tenant_id) if event.tenant_id else None,
        **({"step": steps.name} if stored else {}),
    )
    # Other waiting events the work takes on (absorbed.absorb: a batch, coalesced siblings)
    # keep their lease with this claim's and are given back when the work ends, whichever
    # way, for whatever it did not finish; their task messages go out with this decision's.
    with absorbed.attempt() as scope:
        decision = await _attempt(
            rt,
            event=event,
            steps=steps,
            scope=scope,
            task_name=task_name,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            work=work,
        )
    decision.publish += scope.released
    return decision


async def _attempt(
    rt: Runtime,
    *,
    event: Event,
    steps: Steps,
    scope: absorbed.Scope,
    task_name: str,
    task_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    work: Work,
) -> Decision:
    """The claimed attempt: the work and its outcome in one transaction, or its failure."""
    # Past the budget without a recorded failure: every attempt before this one died with its
    # worker (killed, out of memory). Running it again would only kill the next worker.
    died = steps.retries_used(event, retries_used(event)) - route_for(task_name).max_retries
    try:
        if died > 0:
            raise WorkerDied(
                f"The worker running this task stopped before it finished, {died + 1} "
                "attempts in a row (killed, out of memory or past its time limit); "
                "it is not run again."
            )
        check_tenant(event, kwargs)
        try:
            async with (
                kept_claim(rt, event_id=event.id, task_id=task_id, absorbed=scope.held),
                rt.db.transaction() as session,
            ):
                outcome = await work(session, event, steps.name)
                if outcome.tenant_id is not None:  # a webhook learns its tenant from the grant
                    structlog.contextvars.bind_contextvars(tenant_id=str(outcome.tenant_id))
                decision = await _record(rt, session, event, steps, task_name, task_id, outcome)
        finally:
            if scope.held:
                await _give_back(rt, scope.held)
        log.info("event_finished", status=outcome.status, reason=outcome.reason, kind=decision.kind)
        return decision
    except LostClaim:
        return Decision("skip", {"status": "skipped", "reason": "taken over"})
    except Exception as exc:
        return await _fail(
            rt,
            event=event,
            steps=steps,
            task_name=task_name,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            exc=exc,
        )


async def _give_back(rt: Runtime, held: list[absorbed.Absorbed]) -> None:
    """Absorbed events the work did not finish go back to the queue (best effort: their
    lease runs out otherwise, and the outbox sweeper publishes them then)."""
    try:
        back = await absorbed.release(rt.db, held, stale_after_s=rt.settings.outbox_stale_after_s)
    except Exception as exc:
        log.warning("absorbed_not_released", error=type(exc).__name__)
        return
    if back:
        log.info("absorbed_released", events=back)


async def _record(
    rt: Runtime,
    session: AsyncSession,
    event: Event,
    steps: Steps,
    task_name: str,
    task_id: str,
    outcome: Outcome,
) -> Decision:
    """In the work's transaction: the event's next state (a part, the next step, or final)."""
    stale_after_s = rt.settings.outbox_stale_after_s
    kwargs = dict(event.task_kwargs or {})
    if outcome.status == CONTINUED:
        # A bounded part (bulk work: a sync that spent its POSTROOM_BULK_PART_S): the step
        # stays running and the event goes on to the next part's task id; not an attempt.
        steps.part_done()
        next_id = continuation_id(event.id)
        owned = await steps.save(
            session, event=event, task_id=task_id
        ) and await lifecycle.continue_with(
            session,
            event=event,
            task_id=task_id,
            next_task_id=next_id,
            result=outcome.result,
            stale_after_s=stale_after_s,
        )
        if not owned:
            raise LostClaim(f"event {event.id} was taken over by another run")
        log.info("event_continued", next_task_id=next_id)
        job = Job(task_name, event.id, next_id, kwargs, event.request_id)
        return Decision("next", outcome.result, publish=[*outcome.publish, job])
    steps.ended(outcome.status, result=outcome.result)
    following = steps.next if outcome.status == EventStatus.succeeded else None
    if following is not None:  # hand the event on to the next step's task
        next_id = f"{event.id}.{following['name']}.{uuid.uuid4().hex[:8]}"
        owned = await lifecycle.hand_on(
            session,
            event=event,
            task_id=task_id,
            steps=steps.steps,
            next_task_name=following["task"],
            next_task_id=next_id,
            result=outcome.result,
            stale_after_s=stale_after_s,
        )
        if not owned:
            raise LostClaim(f"event {event.id} was taken over by another run")
        job = Job(following["task"], event.id, next_id, kwargs, event.request_id)
        return Decision("next", outcome.result, publish=[*outcome.publish, job])
    steps.finish_all()
    result = steps.summary(outcome.result)
    owned = await steps.save(session, event=event, task_id=task_id) and await lifecycle.finish(
        session,
        event=event,
        task_id=task_id,
        status=EventStatus(outcome.status),
        result=result,
        error=outcome.reason,
        tenant_id=outcome.tenant_id,
        account_id=outcome.account_id,
    )
    if not owned:
        raise LostClaim(f"event {event.id} was taken over by another run")
    return Decision("done", result, publish=list(outcome.publish))


def slot_wait_s() -> float:
    """When a task that found its account's IMAP slots taken tries again (worker.policy is for
    failures; this is not one)."""
    return round(random.uniform(1.0, 5.0), 3)


async def _fail(
    rt: Runtime,
    *,
    event: Event,
    steps: Steps,
    task_name: str,
    task_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    exc: BaseException,
) -> Decision:
    message = shown_message(exc)
    error = f"{type(exc).__name__}: {message}"
    # Every connection of the account stayed in use while this run waited, or Nylas's budget
    # for it has no room before a 429's Retry-After: try again then, and not as an attempt
    # (the retry budget is for failures).
    busy = isinstance(exc, (AccountBusy, NylasHeldOff))
    if busy:
        steps.uncount()
    used = steps.retries_used(event, retries_used(event))
    if busy or (policy.is_transient(exc) and used < route_for(task_name).max_retries):
        if busy:
            countdown = slot_wait_s()
            if isinstance(exc, NylasHeldOff) and exc.retry_after is not None:
                countdown = round(exc.retry_after + random.uniform(0.0, 1.0), 3)
            log.info("provider_budget_wait", kind=type(exc).__name__, countdown=countdown)
        else:
            countdown = policy.backoff_s(used + 1, rt.settings, hint=policy.retry_after(exc))
            log.warning(
                "task_retry",
                error=type(exc).__name__,
                message=message,
                countdown=countdown,
                attempt=steps.attempts(event),
            )
        steps.ended("retrying", error=error)
        try:
            async with rt.db.transaction() as session:
                await steps.save(session, event=event, task_id=task_id)
                await lifecycle.finish(
                    session,
                    event=event,
                    task_id=task_id,
                    status=EventStatus.retrying,
                    error=error,
                    retry_in_s=countdown,
                    tenant_id=event.tenant_id,
                    account_id=event.account_id,
                )
                if busy:
                    await lifecycle.uncount_attempt(session, event_id=event.id)
        except Exception as record_exc:  # the database itself may be what failed
            log.warning("retry_not_recorded", error=type(record_exc).__name__)
        return Decision("retry", {}, countdown=countdown, error=exc)

    attempts = steps.attempts(event)
    log.error("task_dead", error=type(exc).__name__, message=message, attempts=attempts)
    steps.ended("dead", error=error)
    async with rt.db.transaction() as session:
        await dead_letters.record(
            session,
            event=event,
            task_name=task_name,
            task_id=task_id,
            exc=exc,
            args=args,
            kwargs=kwargs,
            attempts=attempts,
            step=steps.name if steps.stored else None,
        )
        await steps.save(session, event=event, task_id=task_id)
        await lifecycle.finish(
            session,
            event=event,
            task_id=task_id,
            status=EventStatus.dead,
            error=error,
            tenant_id=event.tenant_id,
            account_id=event.account_id,
        )
        await dead_letters.tell_failed(session, event_id=event.id)
    return Decision("dead", {"status": "dead", "error": message}, error=exc)


def publish_all(app: Any, jobs: list[Job]) -> None:
    """After the commit; a lost publish is picked up by the outbox sweeper."""
    for job in jobs:
        dispatch.publish(app, **job.fields())


def run_task(
    task: Task,
    *,
    event_id: str,
    work: Work,
    kwargs: dict[str, Any] | None = None,
    step: bool = False,
) -> dict[str, Any]:
    """What an event-backed task calls: one attempt, then return, hand on, retry or fail.

    `step`: the task runs a step of its event's stored plan (a workflow, or classify and
    apply_rules, whose one-step plan is shown on the event too).
    """
    rt = runtime()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=request_id_of(task), task_id=task.request.id, task=task.name, event_id=event_id
    )
    delivery = task.request.delivery_info or {}
    decision = rt.run(
        execute(
            rt,
            task_name=task.name,
            task_id=task.request.id,
            event_id=uuid.UUID(event_id),
            # A Celery retry of this task id comes from the run that held the claim and gave it
            # up; when that run could not record `retrying` (database away), the event still
            # says `processing` under this id, and the retry may take it like a redelivery.
            redelivered=bool(delivery.get("redelivered")) or bool(task.request.retries),
            args=list(task.request.args or []),
            kwargs={**(task.request.kwargs or {}), **(kwargs or {}), "event_id": event_id},
            work=work,
            stored=step,
        )
    )
    # Only what committed: a rollback (a lost claim, a failure) left its Decision nothing to
    # publish. A publish lost after the commit is the outbox sweeper's to repeat.
    publish_all(task.app, decision.publish)
    if decision.kind == "retry":
        raise task.retry(countdown=decision.countdown, exc=decision.error, max_retries=None)
    if decision.kind == "dead":
        err = decision.error
        raise TaskDead(f"{type(err).__name__}: {decision.result.get('error')}") from None
    return decision.result
