"""The async engine and session factory: one per process, made by the API lifespan or the
worker's process-init hook, never at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from settings import Settings


def idle_in_transaction_ms(settings: Settings) -> int:
    """The claim lease, at least 30 s: a dead worker's locks go when its claim would."""
    return max(settings.claim_lease_s, 30) * 1000


def connect_args(settings: Settings) -> dict[str, Any]:
    """What every connection is opened with: timeouts and the server settings."""
    return {
        "timeout": settings.db_connect_timeout_s,
        "command_timeout": max(settings.db_statement_timeout_ms / 1000 * 2, 5),
        "server_settings": {
            "application_name": "postroom",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            # A host that vanishes mid-transaction sends no FIN: PostgreSQL would keep its
            # session, and the row locks it holds (a batch's waiting notifications), until
            # TCP keepalive gives up. No postroom transaction waits on its client this long.
            "idle_in_transaction_session_timeout": str(idle_in_transaction_ms(settings)),
        },
    }


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """The driver pool's connections run single autocommit statements: no session state."""


async def driver_pool(settings: Settings, *, max_size: int) -> asyncpg.Pool:
    """A pool of plain asyncpg connections to the engine's database, for one hot statement.

    The webhook's INSERT is the only user: through SQLAlchemy's pool and `exec_driver_sql` it
    cost about twice the driver's own `Pool.fetchval` in CPU (docs/benchmarks.md). Opened
    lazily (min_size 0), so the API starts while PostgreSQL is down and answers 503. On
    release a connection skips asyncpg's reset query (RESET ALL, UNLISTEN *, ...: one more
    round trip per request): its users leave no session state, and an open transaction is
    still rolled back by asyncpg itself.
    """
    url = make_url(settings.database_url)
    # The URL's parts as SQLAlchemy's asyncpg dialect hands them to asyncpg.connect; its own
    # statement cache option (0 behind a transaction-mode pgbouncer) is asyncpg's here.
    query = dict(url.query)
    params: dict[str, Any] = {**url.translate_connect_args(username="user")}
    if "prepared_statement_cache_size" in query:
        params["statement_cache_size"] = int(str(query.pop("prepared_statement_cache_size")))
    query.pop("prepared_statement_name_func", None)
    params.update(query)
    pool = asyncpg.create_pool(
        min_size=0,
        max_size=max_size,
        reset=_nothing_to_reset,
        **params,
        **connect_args(settings),
    )
    return await pool


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
            connect_args=connect_args(settings),
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
