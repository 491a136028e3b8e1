"""Queueing work for the API: one Event row per job, idempotent by Idempotency-Key.

The task kwargs are ids and plain JSON only: they are stored on the event and travel through
the broker (Redis lists, Celery's events that Flower shows, the result backend), so neither
secrets (the task reads them from the encrypted credential) nor mail contents (a send's draft
is a `send_draft` row, see services/messages/service.py) ever go there.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from database.models import EventSource, EventStatus
from database.repositories.events import rows as events_repo
from services.errors import Conflict, NotFound
from services.events.ownership import require_owned_account
from services.events.unit_of_work import Job, UnitOfWork, record_event
from services.events.workflows import STEP_TASKS, public_plans


@dataclass(frozen=True)
class JobRef:
    event_id: uuid.UUID
    task_id: str


@dataclass(frozen=True)
class Caller:
    tenant_id: uuid.UUID
    user_id: uuid.UUID


def request_hash(kind: str, body: dict[str, Any]) -> str:
    """sha256 of the canonical request (sorted keys), so key order does not matter."""
    canonical = orjson.dumps({"kind": kind, "body": body}, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


async def queue_job(
    uow: UnitOfWork,
    *,
    caller: Caller,
    kind: str,
    task_name: str,
    task_kwargs: dict[str, Any],
    body: dict[str, Any],
    idempotency_key: str | None,
    stale_after_s: float,
    account_id: uuid.UUID | None = None,
    not_before: datetime | None = None,
) -> tuple[JobRef, bool]:
    """Record the event and queue its publish; (job, created). A repeat returns the first job.

    With `not_before` the event is `scheduled` and nothing is published now: beat's outbox
    sweep releases it at that time (services/events/outbox.py).
    """
    digest = request_hash(kind, body)
    external_id = f"{caller.tenant_id}:{idempotency_key}" if idempotency_key else None
    kwargs = {**task_kwargs, "tenant_id": str(caller.tenant_id), "user_id": str(caller.user_id)}
    job = await record_event(
        uow.session,
        task_name=task_name,
        kwargs=kwargs,
        source=EventSource.api,
        type=kind,
        external_id=external_id,
        # The payload is what the caller asked for, minus anything secret (nothing here is).
        payload={"kind": kind, "kwargs": kwargs},
        stale_after_s=stale_after_s,
        tenant_id=caller.tenant_id,
        user_id=caller.user_id,
        account_id=account_id,
        request_hash=digest,
        request_id=uow.request_id,
        not_before=not_before,
    )
    if job is not None:
        if not_before is None:
            uow.publish_after_commit(job)
        assert job.event_id is not None  # record_event's jobs always name their event
        return JobRef(job.event_id, job.task_id), True
    assert external_id is not None  # insert_once only skips on an existing external id
    existing = await events_repo.get_by_external_id(uow.session, EventSource.api, external_id)
    if existing is None or existing.request_hash != digest:
        raise Conflict("This Idempotency-Key was already used with a different request.")
    return JobRef(existing.id, existing.task_ids[0]), False


def workflow_task(name: str, account_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    """The first task a workflow publishes and its kwargs; the workflow chains the rest."""
    plan = public_plans().get(name)
    if plan is None:
        raise NotFound(f"No workflow named {name!r}.")
    return STEP_TASKS[plan.steps[0]], {
        "account_id": str(account_id),
        "folder": None,
        "full": False,
        "workflow": name,
    }


async def replay_event(uow: UnitOfWork, *, tenant_id: uuid.UUID, event_id: uuid.UUID) -> JobRef:
    """Queue a finished event of the tenant again under a new task id."""
    event = await events_repo.get_for_tenant(uow.session, tenant_id, event_id)
    if event is None:
        raise NotFound("No such event.")
    if event.status not in EventStatus.finished():
        raise Conflict("The event is still in progress; only a finished event can be replayed.")
    await require_owned_account(uow.session, event, tenant_id=tenant_id)
    task_id = str(uuid.uuid4())
    if not await events_repo.prepare_replay(uow.session, event_id=event.id, task_id=task_id):
        raise Conflict("The event is still in progress; only a finished event can be replayed.")
    uow.publish_after_commit(Job(event.task_name, event.id, task_id, dict(event.task_kwargs)))
    return JobRef(event.id, task_id)
