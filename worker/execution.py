"""Running one attempt of an event-backed task: claim, work, and record the outcome.

The work and the event's final state commit in one transaction, so a worker that dies
mid-way leaves either nothing or everything. Failures go through `worker.policy`.
"""

from __future__ import annotations

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
from services.nylas_events import Outcome
from worker import policy
from worker.runtime import Runtime

log = structlog.get_logger(__name__)

Work = Callable[[AsyncSession, Event], Awaitable[Outcome]]


class LostClaim(Exception):
    """Another run took the event over while this one was working."""


@dataclass
class Decision:
    kind: str  # "done" | "retry" | "skip" | "dead"
    result: dict[str, Any]
    countdown: float | None = None
    error: BaseException | None = None
    outcome: Outcome | None = None
    event: Event | None = None


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:2000]


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
    lease = settings.task_time_limit_s + 60
    async with rt.db.transaction() as session:
        event = await events_repo.claim(
            session, event_id=event_id, task_id=task_id, lease_s=lease, redelivered=redelivered
        )
    if event is None:
        log.info("event_not_claimed", event_id=str(event_id), task_id=task_id)
        return Decision("skip", {"status": "skipped", "reason": "already taken or finished"})
    structlog.contextvars.bind_contextvars(
        event_id=str(event.id), task_id=task_id,
        tenant_id=str(event.tenant_id) if event.tenant_id else None,
    )
    try:
        async with rt.db.transaction() as session:
            outcome = await work(session, event)
            owned = await events_repo.finish(
                session, event=event, task_id=task_id, status=EventStatus(outcome.status),
                result=outcome.result, error=outcome.reason,
                tenant_id=outcome.tenant_id, account_id=outcome.account_id,
            )
            if not owned:
                raise LostClaim(f"event {event.id} was taken over by another run")
        log.info("event_finished", status=outcome.status, reason=outcome.reason)
        return Decision("done", outcome.result, outcome=outcome, event=event)
    except LostClaim:
        return Decision("skip", {"status": "skipped", "reason": "taken over"})
    except Exception as exc:
        return await _fail(rt, event=event, task_name=task_name, task_id=task_id,
                           max_retries=max_retries, args=args, kwargs=kwargs, exc=exc)


async def _fail(
    rt: Runtime, *, event: Event, task_name: str, task_id: str, max_retries: int,
    args: list[Any], kwargs: dict[str, Any], exc: BaseException,
) -> Decision:
    message = _message(exc)
    retries_used = event.attempts - 1
    if policy.is_transient(exc) and retries_used < max_retries:
        countdown = policy.backoff_s(event.attempts, rt.settings, hint=policy.retry_after(exc))
        log.warning("task_retry", error=type(exc).__name__, message=message, countdown=countdown,
                    attempt=event.attempts)
        try:
            async with rt.db.transaction() as session:
                await events_repo.finish(
                    session, event=event, task_id=task_id, status=EventStatus.retrying,
                    error=f"{type(exc).__name__}: {message}", retry_in_s=countdown,
                )
        except Exception as record_exc:  # the database itself may be what failed
            log.warning("retry_not_recorded", error=type(record_exc).__name__)
        return Decision("retry", {}, countdown=countdown, error=exc, event=event)

    log.error("task_dead", error=type(exc).__name__, message=message, attempts=event.attempts)
    async with rt.db.transaction() as session:
        await dead_letters_repo.record(
            session,
            tenant_id=event.tenant_id,
            event_id=event.id,
            task_name=task_name,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            exception_type=type(exc).__name__,
            exception_message=message,
            traceback="".join(traceback.format_exception(exc))[-20000:],
            attempts=event.attempts,
        )
        await events_repo.finish(
            session, event=event, task_id=task_id, status=EventStatus.dead,
            error=f"{type(exc).__name__}: {message}",
        )
    return Decision("dead", {"status": "dead", "error": message}, error=exc, event=event)
