"""The async engine and session factory: one per process, made by the API lifespan or the
worker's process-init hook, never at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from settings import Settings


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        pool_size: int | None = None,
        max_overflow: int = 5,
        pre_ping: bool = True,
    ) -> Database:
        engine = create_async_engine(
            settings.database_url,
            pool_size=pool_size or settings.db_pool_size,
            max_overflow=max_overflow,
            pool_pre_ping=pre_ping,
            # A pool that cannot hand out a connection quickly means the database is in trouble:
            # fail fast so the API can answer 503 instead of hanging.
            pool_timeout=settings.db_connect_timeout_s * 2,
            pool_recycle=1800,
            connect_args={
                "timeout": settings.db_connect_timeout_s,
                "command_timeout": max(settings.db_statement_timeout_ms / 1000 * 2, 5),
                "server_settings": {
                    "application_name": "postroom",
                    "statement_timeout": str(settings.db_statement_timeout_ms),
                },
            },
        )
        return cls(engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back on any exception."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection where each statement commits by itself: one round trip, no BEGIN."""
        async with self.engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def dispose(self) -> None:
        await self.engine.dispose()
