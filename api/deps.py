"""FastAPI dependencies: settings, the unit of work (session + jobs to publish after commit)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from settings import Settings
from worker.dispatch import AsyncPublisher

# These are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread, and three
# thread hops per webhook were a measurable part of the ingest path.


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_database(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery  # type: ignore[no-any-return]


async def get_publisher(request: Request) -> AsyncPublisher:
    return request.app.state.publisher  # type: ignore[no-any-return]


@dataclass
class Job:
    task_name: str
    event_id: uuid.UUID
    task_id: str
    kwargs: dict[str, Any]


@dataclass
class UnitOfWork:
    """The request's transaction and the jobs it wants published once that commits.

    The route calls `commit()`: FastAPI runs a dependency's teardown after the response is
    on its way, so a commit there could fail behind a 200 the client already has.
    """

    session: AsyncSession
    publisher: AsyncPublisher
    request_id: str | None
    jobs: list[Job] = field(default_factory=list)
    published: list[bool] = field(default_factory=list)

    def publish_after_commit(
        self,
        *,
        task_name: str,
        event_id: uuid.UUID,
        task_id: str,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.jobs.append(Job(task_name, event_id, task_id, kwargs or {}))

    async def commit(self) -> None:
        await self.session.commit()
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            self.published.append(
                await self.publisher.publish(
                    task_name=job.task_name,
                    event_id=job.event_id,
                    task_id=job.task_id,
                    kwargs=job.kwargs,
                    request_id=self.request_id,
                )
            )


async def get_uow(
    request: Request,
    db: Annotated[Database, Depends(get_database)],
    publisher: Annotated[AsyncPublisher, Depends(get_publisher)],
) -> AsyncIterator[UnitOfWork]:
    async with db.sessionmaker() as session:
        uow = UnitOfWork(session=session, publisher=publisher, request_id=request.state.request_id)
        try:
            yield uow
        finally:
            # Whatever the route did not commit is dropped, with the jobs it collected.
            uow.jobs.clear()
            if session.in_transaction():
                await session.rollback()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
PublisherDep = Annotated[AsyncPublisher, Depends(get_publisher)]
UowDep = Annotated[UnitOfWork, Depends(get_uow)]
