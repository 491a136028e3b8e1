"""The glue every event-backed task shares: run an attempt, then retry, fail or return."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from celery import Task

from worker import dispatch
from worker.config import route_for
from worker.execution import Work, execute
from worker.runtime import runtime


class TaskDead(Exception):
    """The task failed for good; its dead letter holds the details."""


def request_id_of(task: Task) -> str | None:
    value = getattr(task.request, "request_id", None)
    if value is None and isinstance(task.request.headers, dict):
        value = task.request.headers.get("request_id")
    return value if isinstance(value, str) else None


def run_event_task(
    task: Task, *, event_id: str, work: Work, kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
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
            max_retries=route_for(task.name).max_retries,
            # A Celery retry of this task id comes from the run that held the claim and gave it
            # up; when that run could not record `retrying` (database away), the event still
            # says `processing` under this id, and the retry may take it like a redelivery.
            redelivered=bool(delivery.get("redelivered")) or bool(task.request.retries),
            args=list(task.request.args or []),
            kwargs={**(task.request.kwargs or {}), **(kwargs or {}), "event_id": event_id},
            work=work,
        )
    )
    if decision.kind == "continued":  # after the commit; a lost publish: the outbox sweeper
        dispatch.publish(
            task.app,
            task_name=task.name,
            event_id=uuid.UUID(event_id),
            task_id=str(decision.next_task_id),
            kwargs={k: v for k, v in (task.request.kwargs or {}).items() if k != "event_id"},
            request_id=request_id_of(task),
        )
    if decision.kind == "retry":
        raise task.retry(countdown=decision.countdown, exc=decision.error, max_retries=None)
    if decision.kind == "dead":
        err = decision.error
        raise TaskDead(f"{type(err).__name__}: {decision.result.get('error')}") from None
    return decision.result
