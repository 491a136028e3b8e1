"""Running one attempt of an event-backed task: claim, work, and record the outcome.

The work and the event's final state commit in one transaction, so a worker that dies
mid-way leaves either nothing or everything. Failures go through `worker.policy`.
"""

from __future__ import annotations

import random
import re
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event, EventStatus
from database.repositories import dead_letters as dead_letters_repo
from database.repositories import events as events_repo
from services.errors import PermissionDenied, PostroomError
from services.imap_slots import AccountBusy
from services.nylas_budget import NylasHeldOff
from services.nylas_events import Outcome
from worker import policy
from worker.lease import kept_claim
from worker.runtime import Runtime

log = structlog.get_logger(__name__)

Work = Callable[[AsyncSession, Event], Awaitable[Outcome]]

# The Outcome status of one part of a job cut into bounded parts (bulk work: a sync that spent
# its POSTROOM_BULK_PART_S / _MESSAGES). Not an event status: the event stays `processing`,
# handed to the next part's task id (events_repo.continue_with), which the caller publishes.
CONTINUED = "continued"


def continuation_id(event_id: uuid.UUID) -> str:
    """The task id of a job's next part: unique, and readable as such in Flower."""
    return f"{event_id}.part.{uuid.uuid4().hex[:8]}"


class LostClaim(Exception):
    """Another run took the event over while this one was working."""


@dataclass
class Decision:
    kind: str  # "done" | "continued" | "retry" | "skip" | "dead"
    result: dict[str, Any]
    countdown: float | None = None
    error: BaseException | None = None
    outcome: Outcome | None = None
    event: Event | None = None
    next_task_id: str | None = None  # "continued": publish this part after the commit


def shown_message(exc: BaseException) -> str:
    """What people are shown of a failure (events, dead letters, logs).

    Our own exceptions carry sentences written without secrets; anything else may quote its
    input (a codec error quoting a password character, a driver echoing a DSN), so only its
    type is shown. The full text stays in the dead letter's traceback, which no API returns.
    """
    if isinstance(exc, PostroomError):
        return exc.message[:2000]
    return type(exc).__name__


_SECRET_KEY = re.compile(r"pass|secret|token|api[-_]?key|authorization|credential", re.I)


def scrub(value: Any) -> Any:
    """Task arguments as they may be shown to people: values under secret-looking keys masked."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


async def record_dead_letter(
    session: AsyncSession,
    *,
    event: Event,
    task_name: str,
    task_id: str,
    exc: BaseException,
    args: list[Any],
    kwargs: dict[str, Any],
    attempts: int,
    step: str | None = None,
) -> None:
    """The dead letter of a failure, in the caller's transaction (which also marks the event)."""
    await dead_letters_repo.record(
        session,
        tenant_id=event.tenant_id,
        event_id=event.id,
        task_name=task_name,
        task_id=task_id,
        step=step,
        args=scrub(args),
        kwargs=scrub(kwargs),
        exception_type=type(exc).__name__,
        exception_message=shown_message(exc),
        # Full detail for operators: stored, never returned by the API.
        traceback="".join(traceback.format_exception(exc))[-20000:],
        attempts=attempts,
    )


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


async def execute(
    rt: Runtime,
    *,
    task_name: str,
    task_id: str,
    event_id: uuid.UUID,
    max_retries: int,
    redelivered: bool,
    args: list[Any],
    kwargs: dict[str, Any],
    work: Work,
) -> Decision:
    settings = rt.settings
    # Short, and renewed while the work runs (worker.lease): a dead worker's claim runs out
    # within a minute instead of after the task's hard time limit.
    lease = settings.claim_lease_s
    try:
        async with rt.db.transaction() as session:
            event = await events_repo.claim(
                session, event_id=event_id, task_id=task_id, lease_s=lease, redelivered=redelivered
            )
    except Exception as exc:
        if not policy.is_transient(exc):
            raise
        # The database is away: nothing was claimed, so retry the message itself soon. The
        # event keeps its lease, so the outbox sweeper also covers a retry that gets lost.
        countdown = policy.backoff_s(1, settings)
        log.warning("claim_failed", error=type(exc).__name__, countdown=countdown)
        return Decision("retry", {}, countdown=countdown, error=exc)
    if event is None:
        log.info("event_not_claimed", event_id=str(event_id), task_id=task_id)
        return Decision("skip", {"status": "skipped", "reason": "already taken or finished"})
    structlog.contextvars.bind_contextvars(
        event_id=str(event.id),
        task_id=task_id,
        tenant_id=str(event.tenant_id) if event.tenant_id else None,
    )
    try:
        check_tenant(event, kwargs)
        async with (
            kept_claim(rt, event_id=event.id, task_id=task_id),
            rt.db.transaction() as session,
        ):
            outcome = await work(session, event)
            if outcome.tenant_id is not None:  # a webhook learns its tenant from the grant
                structlog.contextvars.bind_contextvars(tenant_id=str(outcome.tenant_id))
            if outcome.status == CONTINUED:  # a bounded part: hand the event to the next one
                next_id = continuation_id(event.id)
                owned = await events_repo.continue_with(
                    session,
                    event=event,
                    task_id=task_id,
                    next_task_id=next_id,
                    result=outcome.result,
                    stale_after_s=settings.outbox_stale_after_s,
                )
                if not owned:
                    raise LostClaim(f"event {event.id} was taken over by another run")
                log.info("event_continued", next_task_id=next_id)
                return Decision(
                    "continued", outcome.result, outcome=outcome, event=event, next_task_id=next_id
                )
            owned = await events_repo.finish(
                session,
                event=event,
                task_id=task_id,
                status=EventStatus(outcome.status),
                result=outcome.result,
                error=outcome.reason,
                tenant_id=outcome.tenant_id,
                account_id=outcome.account_id,
            )
            if not owned:
                raise LostClaim(f"event {event.id} was taken over by another run")
        log.info("event_finished", status=outcome.status, reason=outcome.reason)
        return Decision("done", outcome.result, outcome=outcome, event=event)
    except LostClaim:
        return Decision("skip", {"status": "skipped", "reason": "taken over"})
    except Exception as exc:
        return await _fail(
            rt,
            event=event,
            task_name=task_name,
            task_id=task_id,
            max_retries=max_retries,
            args=args,
            kwargs=kwargs,
            exc=exc,
        )


def slot_wait_s() -> float:
    """When a task that found its account's IMAP slots taken tries again (worker.policy is for
    failures; this is not one)."""
    return round(random.uniform(1.0, 5.0), 3)


async def _fail(
    rt: Runtime,
    *,
    event: Event,
    task_name: str,
    task_id: str,
    max_retries: int,
    args: list[Any],
    kwargs: dict[str, Any],
    exc: BaseException,
) -> Decision:
    message = shown_message(exc)
    if isinstance(exc, (AccountBusy, NylasHeldOff)):
        # Every connection of the account stayed in use while this run waited, or Nylas's
        # budget for it has no room before a 429's Retry-After: try again then, and not as an
        # attempt (the retry budget is for failures).
        countdown = slot_wait_s()
        if isinstance(exc, NylasHeldOff) and exc.retry_after is not None:
            countdown = round(exc.retry_after + random.uniform(0.0, 1.0), 3)
        log.info("provider_budget_wait", kind=type(exc).__name__, countdown=countdown)
        async with rt.db.transaction() as session:
            await events_repo.finish(
                session,
                event=event,
                task_id=task_id,
                status=EventStatus.retrying,
                error=f"{type(exc).__name__}: {message}",
                retry_in_s=countdown,
                tenant_id=event.tenant_id,
                account_id=event.account_id,
            )
            await events_repo.uncount_attempt(session, event_id=event.id)
        return Decision("retry", {}, countdown=countdown, error=exc, event=event)
    if policy.is_transient(exc) and retries_used(event) < max_retries:
        countdown = policy.backoff_s(event.attempts, rt.settings, hint=policy.retry_after(exc))
        log.warning(
            "task_retry",
            error=type(exc).__name__,
            message=message,
            countdown=countdown,
            attempt=event.attempts,
        )
        try:
            async with rt.db.transaction() as session:
                await events_repo.finish(
                    session,
                    event=event,
                    task_id=task_id,
                    status=EventStatus.retrying,
                    error=f"{type(exc).__name__}: {message}",
                    retry_in_s=countdown,
                    tenant_id=event.tenant_id,
                    account_id=event.account_id,
                )
        except Exception as record_exc:  # the database itself may be what failed
            log.warning("retry_not_recorded", error=type(record_exc).__name__)
        return Decision("retry", {}, countdown=countdown, error=exc, event=event)

    log.error("task_dead", error=type(exc).__name__, message=message, attempts=event.attempts)
    async with rt.db.transaction() as session:
        await record_dead_letter(
            session,
            event=event,
            task_name=task_name,
            task_id=task_id,
            exc=exc,
            args=args,
            kwargs=kwargs,
            attempts=event.attempts,
        )
        await events_repo.finish(
            session,
            event=event,
            task_id=task_id,
            status=EventStatus.dead,
            error=f"{type(exc).__name__}: {message}",
            tenant_id=event.tenant_id,
            account_id=event.account_id,
        )
    return Decision("dead", {"status": "dead", "error": message}, error=exc, event=event)
