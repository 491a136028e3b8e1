"""A transaction and the task messages it publishes once it has committed.

Every path that queues work does the same two things: insert the event row (the outbox), and
publish its task message only after that insert committed, so a worker never gets a message
for a row it cannot see. A publish that fails or is lost is the outbox sweeper's to repeat.
`record_event` is the insert and `Job` the one shape of what to publish afterwards; the
API's `UnitOfWork` holds the request's session and its jobs. Services take a `Publisher`
(worker.dispatch.AsyncPublisher fits) and import nothing of worker or api.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.events import rows as events_repo


@dataclass(frozen=True)
class Job:
    """One task message for a committed event: the keywords of every publisher."""

    task_name: str
    event_id: uuid.UUID | None  # None: a task that works on no event (a tenant's model refit)
    task_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    lane: str | None = None  # a lane key for a task without a tenant yet (a webhook's grant)

    def fields(self) -> dict[str, Any]:
        """As keywords for worker.dispatch.publish / AsyncPublisher.publish."""
        return {
            "task_name": self.task_name,
            "event_id": self.event_id,
            "task_id": self.task_id,
            "kwargs": dict(self.kwargs),
            "request_id": self.request_id,
            "lane": self.lane,
        }


class Publisher(Protocol):
    """worker.dispatch.AsyncPublisher as far as services use it."""

    async def publish(
        self,
        *,
        task_name: str,
        event_id: uuid.UUID | None,
        task_id: str,
        kwargs: dict[str, Any] | None = None,
        request_id: str | None = None,
        lane: str | None = None,
    ) -> bool: ...


async def record_event(
    session: AsyncSession,
    *,
    task_name: str,
    kwargs: dict[str, Any],
    source: str,
    type: str,
    stale_after_s: float,
    external_id: str | None = None,
    payload: dict[str, Any] | None = None,
    tenant_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    request_id: str | None = None,
    request_hash: str | None = None,
    not_before: datetime | None = None,
    event_id: uuid.UUID | None = None,
    task_id: str | None = None,
    any_conflict: bool = False,
) -> Job | None:
    """Insert an event in the caller's transaction; the Job to publish after its commit.

    None when the external id was taken (a repeat: nothing to publish). An event with
    `not_before` is `scheduled`: its caller does not publish it, the outbox sweep releases it
    at that time. The payload defaults to the task's kwargs under `type` (ids and flags only,
    never a secret).
    """
    event_id = event_id or uuid.uuid4()
    task_id = task_id or str(uuid.uuid4())
    created = await events_repo.insert_once(
        session,
        event_id=event_id,
        source=source,
        type=type,
        external_id=external_id,
        task_name=task_name,
        task_id=task_id,
        payload=payload if payload is not None else {"kind": type, "kwargs": kwargs},
        stale_after_s=stale_after_s,
        task_kwargs=kwargs,
        tenant_id=tenant_id,
        user_id=user_id,
        account_id=account_id,
        request_hash=request_hash,
        request_id=request_id,
        not_before=not_before,
        any_conflict=any_conflict,
    )
    if not created:
        return None
    return Job(task_name, event_id, task_id, kwargs, request_id)


@dataclass
class UnitOfWork:
    """The request's transaction and the jobs it wants published once that commits.

    The route calls `commit()`: FastAPI runs a dependency's teardown after the response is
    on its way, so a commit there could fail behind a 200 the client already has.
    """

    session: AsyncSession
    publisher: Publisher
    request_id: str | None
    jobs: list[Job] = field(default_factory=list)
    published: list[bool] = field(default_factory=list)

    def publish_after_commit(self, job: Job) -> None:
        self.jobs.append(job)

    async def commit(self) -> None:
        await self.session.commit()
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            fields = job.fields()
            # The request that queued (or replayed) the job is the one its logs follow.
            if self.request_id is not None:
                fields["request_id"] = self.request_id
            self.published.append(await self.publisher.publish(**fields))
