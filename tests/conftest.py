"""Session-wide real peers (PostgreSQL database, Redis server, fake Nylas, Celery worker,
Dovecot, aiosmtpd) and the fixtures built on them. Settings reach the code and its
subprocesses through the environment. Helpers that tests import are in tests/helpers.py.

Isolation: no test empties the database by default. Every test makes its own tenant (the
factories in tests/factories.py and tests/api/keys.py name a new one each call), and nearly
every row belongs to a tenant, so a test never sees another's rows and nothing races the
session's worker, which may still be finishing the previous test's task. Rows without a
tenant (webhook events and dead letters for grants nobody owns) are told apart by their own
random grant and notification ids, or by time (`started_at`, `helpers.tenantless_events`).
A test whose subject is the whole table (a sweep over all tenants, a count across tenants)
asks for `empty_database`, which first waits until the worker has nothing queued or in hand."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from tests.fakes.nylas_server import FakeNylas
from tests.helpers import DB_NAME, ENV, NYLAS_API_KEY, PG_ADMIN, WEBHOOK_SECRET, wait_for
from tests.imap_fixtures import Dovecot, add_user
from tests.oauth_fixtures import fresh_oauth, oauth_dovecot, oauth_server, xoauth2_smtp  # noqa: F401
from tests.peers import RedisServer, Workers, migrate
from tests.smtp_fixtures import Certificate, SmtpPeer, make_certificate, start_smtp

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
        # Claims renew every second in tests, so the lease mechanism runs in every worker test.
        "POSTROOM_CLAIM_LEASE_S": "2",
        "POSTROOM_LOG_LEVEL": "INFO",
        # Dovecot and aiosmtpd listen on loopback; tests of the refusal pass their own list.
        "POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS": "127.0.0.0/8,::1",
        # The tests' OAuth2 server (tests/oauth_server.py) listens on loopback too.
        "POSTROOM_ALLOWED_PRIVATE_OAUTH_HOSTS": "127.0.0.0/8,::1",
        # The webhook receivers of tests/webhook_receiver.py listen on loopback too.
        "POSTROOM_ALLOWED_PRIVATE_WEBHOOK_HOSTS": "127.0.0.0/8,::1",
        # `make install` writes an ops token into .env; the tests that need one pass their own.
        "POSTROOM_OPS_TOKEN": "",
        "POSTROOM_ENVIRONMENT": "development",
    }
)
ENV.update(os.environ)


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


@pytest.fixture
async def scratch_redis() -> AsyncIterator[Any]:
    """An empty Redis database (1) on the session's server, no worker's broker: for a test that
    needs Redis to itself (it may FLUSHDB it). Never flush the broker's own database: that
    also deletes kombu's exchange bindings (`_kombu.binding.*`), which the running worker
    declared once at start, and from then on every message kombu routes through them (a
    Celery retry, a message restored after a consumer was cancelled or a worker was lost)
    goes silently to kombu's `ae.undeliver` list instead of its lane."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(_redis.url_of(1))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


def _missing_bindings() -> list[str]:
    import redis

    from worker.config import all_queues

    names = [f"_kombu.binding.{q}" for q in all_queues()]
    client = redis.Redis.from_url(_redis.url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(name)
            found = pipe.execute()
    finally:
        client.close()
    return [n for n, ok in zip(names, found, strict=True) if not ok]


def _declare_queues() -> None:
    """Declare every lane again, as a worker does when it starts (the bindings come back)."""
    from settings import Settings
    from worker.config import make_celery

    app = make_celery(Settings(), publisher_only=True)
    with app.connection_for_write() as conn:
        for queue in app.amqp.queues.values():
            queue(conn.default_channel).declare()


@pytest.fixture(autouse=True)
def broker_bindings_kept() -> Iterator[None]:
    """Fails the test that deleted the session worker's exchange bindings from the broker,
    instead of a test much later whose retry or restored message was silently lost."""
    yield
    if _session_workers and (missing := _missing_bindings()):
        _declare_queues()  # only the culprit fails
        pytest.fail(
            f"this test deleted kombu's bindings from the session's broker ({missing[0]}, "
            f"{len(missing)} in all), FLUSHDB?: use the scratch_redis fixture instead"
        )


@pytest.fixture(scope="session")
async def db(settings: Any) -> AsyncIterator[Any]:
    from database.engine import Database

    database = Database.from_settings(settings, pool_size=4)
    yield database
    await database.dispose()


@pytest.fixture(autouse=True)
def fresh_fake_nylas() -> None:
    """Each test starts with an empty fake Nylas (its grants and request log are per test)."""
    _nylas.reset()


async def broker_busy() -> int:
    """Messages the session's broker still holds: queued in a lane, or delivered to a worker
    and not yet acknowledged (tasks ack late, so a task in hand or waiting for its countdown
    is in `unacked` until it has finished, its follow-up tasks already published)."""
    import redis.asyncio as aioredis

    from worker.config import all_queues

    lanes = set(all_queues())
    client = aioredis.Redis.from_url(_redis.url)
    try:
        held = int(await client.hlen("unacked"))
        # kombu keeps a list per queue and priority: `short.3`, `short.3\x06\x163`, ...
        async for key in client.scan_iter(count=1000):
            if key.decode(errors="replace").split("\x06", 1)[0] in lanes:
                held += int(await client.llen(key))
        return held
    finally:
        await client.aclose()


@pytest.fixture
async def worker_idle() -> None:
    """Wait until the session's worker has nothing queued or in hand (twice in a row, so a
    task that was just publishing its follow-up is not missed). Without a running worker,
    what the broker holds is inert until one starts, so there is nothing to wait for."""
    if not _session_workers:
        return

    async def idle() -> bool:
        return await broker_busy() == 0 and await broker_busy() == 0

    await wait_for(idle, timeout=120, interval=0.1, message="the session's worker to be idle")


@pytest.fixture
async def empty_database(database_name: str, worker_idle: None) -> None:
    """For the few tests whose subject is a whole table (sweeps over all tenants, counts of
    tenant-less rows): empties every table once the worker is idle, so nothing races it."""
    conn = await asyncpg.connect(f"postgresql://{PG_ADMIN}/{DB_NAME}")
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        await conn.execute(
            "TRUNCATE " + ", ".join(f'"{r["tablename"]}"' for r in names) + " CASCADE"
        )
    finally:
        await conn.close()


@pytest.fixture
async def started_at(db: Any) -> Any:
    """The database's clock as the test starts: rows without a tenant (webhooks for grants
    nobody owns) that a test stored are the ones received since."""
    import sqlalchemy as sa

    async with db.sessionmaker() as s:
        return (await s.execute(sa.select(sa.func.now()))).scalar_one()


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


@pytest.fixture
async def unserved_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An API client on a private Redis that no worker reads: its events keep the states the
    test writes, whether or not the session's worker runs, and what it publishes stays
    countable in the queues."""
    from api.app import create_app

    redis = RedisServer().start()
    application = create_app(settings.model_copy(update={"redis_url": redis.url}))
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
                yield c
    finally:
        redis.stop()


_session_workers: list[Workers] = []


@pytest.fixture(scope="session")
def worker(database_name: str) -> Iterator[Any]:
    """`make worker`'s layout for the whole session: a short and a bulk Celery worker (prefork,
    2 processes each), so every worker test also runs through the lanes and classes."""
    proc = Workers(ENV, name="test").start()
    _session_workers.append(proc)
    try:
        proc.wait_ready(timeout=60)
        yield proc
    finally:
        proc.stop()
        _session_workers.remove(proc)


# -- mail peers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot (IMAP and POP3, plain and TLS) for the session; tests take their own user."""
    server = Dovecot(tls=True, spare_users=500).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mailbox_user(dovecot: Dovecot) -> str:
    """A mailbox owner no other test has used: its folders start empty."""
    return add_user(dovecot)


@pytest.fixture(scope="session")
def certificate() -> Certificate:
    return make_certificate()


@pytest.fixture
def smtp_server(certificate: Certificate) -> Iterator[Any]:
    """Start SMTP servers on demand: `smtp_server(mode=..., security=..., auth=...)`."""
    peers: list[SmtpPeer] = []

    def start(**kwargs: Any) -> SmtpPeer:
        peer = start_smtp(cert=certificate, **kwargs)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
