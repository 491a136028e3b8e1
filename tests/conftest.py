"""Session-wide real peers (PostgreSQL database, Redis server, fake Nylas, Celery worker) and
per-test clean slates. Settings reach the code and its subprocesses through the environment."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from tests.fakes.nylas_server import FakeNylas
from tests.peers import RedisServer, Workers, migrate

T = TypeVar("T")

PG_ADMIN = os.environ.get("POSTROOM_TEST_PG", "postgres@127.0.0.1:5432")
DB_NAME = f"postroom_test_{os.getpid()}_{secrets.token_hex(3)}"
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
NYLAS_API_KEY = "nyk_" + secrets.token_hex(12)

_redis = RedisServer().start()
_nylas = FakeNylas(api_key=NYLAS_API_KEY).start()

os.environ.update(
    {
        "POSTROOM_DATABASE_URL": f"postgresql+asyncpg://{PG_ADMIN}/{DB_NAME}",
        "POSTROOM_REDIS_URL": _redis.url,
        "POSTROOM_NYLAS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "POSTROOM_NYLAS_API_KEY": NYLAS_API_KEY,
        "POSTROOM_NYLAS_API_URI": _nylas.url,
        "POSTROOM_NYLAS_TIMEOUT_S": "5",
        "POSTROOM_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        # Short waits keep retry and outbox tests quick; the policy is the same.
        "POSTROOM_RETRY_BASE_S": "0.2",
        "POSTROOM_RETRY_CAP_S": "2",
        "POSTROOM_OUTBOX_STALE_AFTER_S": "2",
        "POSTROOM_OUTBOX_SWEEP_INTERVAL_S": "1",
        # Syncs through the worker run in parts of one 250-message batch (a part stops after
        # the batch that reaches this), so every bigger worker test crosses parts.
        "POSTROOM_BULK_PART_MESSAGES": "250",
        # A task that finds its account's IMAP connections taken waits this long, then retries.
        "POSTROOM_IMAP_SLOT_WAIT_S": "3",
        # Claims renew every second in tests, so the lease mechanism runs in every worker test.
        "POSTROOM_CLAIM_LEASE_S": "2",
        "POSTROOM_LOG_LEVEL": "INFO",
        # Dovecot and aiosmtpd listen on loopback; tests of the refusal pass their own list.
        "POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS": "127.0.0.0/8,::1",
    }
)
ENV = dict(os.environ)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _nylas.stop()
    _redis.stop()


@pytest.fixture(scope="session")
def database_name() -> Iterator[str]:
    migrate(ENV)
    yield DB_NAME

    async def drop() -> None:
        conn = await asyncpg.connect(f"postgresql://{PG_ADMIN}/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def settings(database_name: str) -> Any:
    from settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def fake_nylas() -> FakeNylas:
    return _nylas


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    return _redis


@pytest.fixture(scope="session")
async def db(settings: Any) -> AsyncIterator[Any]:
    from database.engine import Database

    database = Database.from_settings(settings, pool_size=4)
    yield database
    await database.dispose()


TABLES = ("tenant", "event", "dead_letter")


@pytest.fixture(autouse=True)
async def clean_slate(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts with empty tables and a fresh fake Nylas."""
    if "database_name" in request.fixturenames or "settings" in request.fixturenames:
        conn = await asyncpg.connect(f"postgresql://{PG_ADMIN}/{DB_NAME}")
        try:
            names = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
            if names:
                stmt = "TRUNCATE " + ", ".join(f'"{r["tablename"]}"' for r in names) + " CASCADE"
                # The session's worker may still be finishing a task of the previous test.
                for attempt in range(10):
                    try:
                        await conn.execute(stmt)
                        break
                    except (asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError):
                        if attempt == 9:
                            raise
                        await asyncio.sleep(0.2)
        finally:
            await conn.close()
    _nylas.reset()
    yield


@pytest.fixture
async def app(settings: Any) -> AsyncIterator[Any]:
    from api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
        yield c


@pytest.fixture(scope="session")
def worker(database_name: str) -> Iterator[Any]:
    """`make worker`'s layout for the whole session: a short and a bulk Celery worker (prefork,
    2 processes each), so every worker test also runs through the lanes and classes."""
    proc = Workers(ENV, name="test").start()
    try:
        proc.wait_ready(timeout=60)
        yield proc
    finally:
        proc.stop()


# -- helpers ------------------------------------------------------------------------------


async def wait_for(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Await `check()` until it returns something truthy; fail with `message` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")


def notification(
    type_: str,
    obj: dict[str, Any] | None = None,
    *,
    grant_id: str | None = None,
    nid: str | None = None,
    time_: int | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"application_id": "app-1", "object": obj or {}}
    if grant_id is not None:
        data["grant_id"] = grant_id
    return {
        "specversion": "1.0",
        "type": type_,
        "source": "/google/emails/realtime",
        "id": nid or uuid.uuid4().hex,
        "time": time_ if time_ is not None else int(time.time()),
        "webhook_delivery_attempt": 1,
        "data": data,
    }


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    from services.webhooks import sign as _sign

    return _sign(secret, body)


async def post_webhook(
    client: httpx.AsyncClient,
    payload: dict[str, Any] | bytes,
    *,
    signature: str | None = "auto",
    gzip_body: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    if gzip_body:
        body = gzip.compress(body)
        hdrs["content-encoding"] = "gzip"
    if signature == "auto":
        hdrs["x-nylas-signature"] = sign(body)
    elif signature is not None:
        hdrs["x-nylas-signature"] = signature
    return await client.post("/webhooks/nylas", content=body, headers=hdrs)
