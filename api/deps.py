"""FastAPI dependencies: settings, the database, the publisher and the request's unit of work
(services.events.unit_of_work: its session and the jobs to publish after it commits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from celery import Celery
from fastapi import Depends, Request

from database.engine import Database
from services.events.ingest import IngestBatcher
from services.events.unit_of_work import UnitOfWork
from settings import Settings
from worker.dispatch import AsyncPublisher

# These are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread, and three
# thread hops per webhook were a measurable part of the ingest path.


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_database(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def get_ingest_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.ingest_pool


async def get_ingest(request: Request) -> IngestBatcher:
    return request.app.state.ingest_batcher  # type: ignore[no-any-return]


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery  # type: ignore[no-any-return]


async def get_publisher(request: Request) -> AsyncPublisher:
    return request.app.state.publisher  # type: ignore[no-any-return]


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
IngestPoolDep = Annotated[asyncpg.Pool, Depends(get_ingest_pool)]
IngestDep = Annotated[IngestBatcher, Depends(get_ingest)]
UowDep = Annotated[UnitOfWork, Depends(get_uow)]
