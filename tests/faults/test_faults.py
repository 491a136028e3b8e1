"""Fault injection: one fault at a time under a load of signed webhooks, then the ledger.

Every accepted webhook must reach succeeded/ignored/dead in bounded time, no message row is
duplicated and no event's work is applied twice. Slow: `make test-all` and CI run it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from database.engine import Database
from database.models import Event
from settings import Settings
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.faults.ledger import Ledger
from tests.faults.stack import Stack, child_pids, kill9, kill_redis, start_redis_again
from tests.helpers import notification

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Short on purpose: the same policy, minutes shrunk to seconds.
SHORT = {
    "POSTROOM_TASK_SOFT_TIME_LIMIT_S": "8",
    "POSTROOM_TASK_TIME_LIMIT_S": "10",
    "POSTROOM_OUTBOX_STALE_AFTER_S": "5",
    "POSTROOM_OUTBOX_SWEEP_INTERVAL_S": "1",
    "POSTROOM_RETRY_BASE_S": "0.5",
    "POSTROOM_RETRY_CAP_S": "4",
    "POSTROOM_NYLAS_TIMEOUT_S": "5",
    "POSTROOM_LOG_LEVEL": "INFO",
}
SETTLE_S = 90


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(SHORT)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[Database]:
    stack.ensure_beat()
    database = Database.from_settings(Settings(database_url=stack.pg.url), pool_size=2)
    yield database
    await database.dispose()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as c:
        yield c


async def grant_with_messages(db: Database, stack: Stack, n: int) -> tuple[str, list[str]]:
    account = await create_nylas_account(db)
    grant = account.grant_id
    assert grant is not None
    ids = [f"m-{grant}-{i}" for i in range(n)]
    for mid in ids:
        stack.nylas.put_message(grant, make_message(grant, mid))
    return grant, ids


def truncated(grant: str, mid: str) -> dict[str, Any]:
    return notification("message.created.truncated", {"id": mid}, grant_id=grant)


async def deliver(
    ledger: Ledger,
    client: httpx.AsyncClient,
    payloads: list[dict[str, Any]],
    *,
    concurrency: int = 4,
    pace_s: float = 0.0,
) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(p: dict[str, Any]) -> None:
        async with sem:
            await ledger.post(client, p)
            if pace_s:
                await asyncio.sleep(pace_s)

    await asyncio.gather(*(one(p) for p in payloads))


async def wait_processing(db: Database, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.sessionmaker() as s:
            n = (
                await s.execute(sa.text("SELECT count(*) FROM event WHERE status = 'processing'"))
            ).scalar_one()
        if n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no event reached processing")


async def finish(ledger: Ledger, db: Database, *, expect_messages: int | None = None) -> None:
    await ledger.settle(db, timeout=SETTLE_S)
    ledger.print()
    ledger.assert_clean()
    if expect_messages is not None:
        assert ledger.message_rows >= expect_messages, ledger.figures()


async def test_1_kill_a_worker_child_mid_task(stack: Stack, db: Database, client: Any) -> None:
    ledger = Ledger("kill -9 worker child mid-task")
    grant, ids = await grant_with_messages(db, stack, 12)
    stack.nylas.fail(r"/messages/m-", status=0, delay=1.5, times=1000)  # the fetch blocks
    await deliver(ledger, client, [truncated(grant, m) for m in ids])
    await wait_processing(db)
    children = child_pids(stack.workers[-1].proc.pid)  # type: ignore[union-attr]
    assert children, "the worker has no pool processes"
    kill9(children[0])
    ledger.fault_at = time.monotonic()
    await finish(ledger, db)
    stack.nylas.reset()
    assert ledger.statuses["succeeded"] == len(ids), ledger.figures()


async def test_2_kill_the_worker_main_process(stack: Stack, db: Database, client: Any) -> None:
    ledger = Ledger("kill -9 worker main process, new worker")
    grant, ids = await grant_with_messages(db, stack, 12)
    stack.nylas.fail(r"/messages/m-", status=0, delay=1.5, times=1000)
    await deliver(ledger, client, [truncated(grant, m) for m in ids])
    await wait_processing(db)
    old = stack.workers[-1]
    assert old.proc is not None
    orphans = child_pids(old.proc.pid)
    kill9(old.proc.pid)
    ledger.fault_at = time.monotonic()
    await asyncio.sleep(1)
    stack.start_worker()
    try:
        await finish(ledger, db)
    finally:
        for pid in orphans:  # pool processes left behind by the dead parent
            kill9(pid)
        stack.nylas.reset()
    assert ledger.statuses["succeeded"] == len(ids), ledger.figures()


async def test_3_redis_restarts_empty(stack: Stack, db: Database, client: Any) -> None:
    ledger = Ledger("Redis killed and restarted empty")
    grant, ids = await grant_with_messages(db, stack, 30)
    stack.nylas.fail(r"/messages/m-", status=0, delay=0.3, times=1000)
    await deliver(ledger, client, [truncated(grant, m) for m in ids[:15]])
    kill_redis(stack.redis)
    ledger.fault_at = time.monotonic()
    await deliver(ledger, client, [truncated(grant, m) for m in ids[15:]])  # broker away
    await asyncio.sleep(3)
    start_redis_again(stack.redis)
    try:
        await ledger.settle(db, timeout=SETTLE_S)
        ledger.print()
    finally:
        stack.nylas.reset()
    # The outbox sweeper is what re-publishes what Redis lost: its beat must survive too.
    assert stack.beat_alive(), "beat stopped after the Redis restart:\n" + stack.beat.log()[-1500:]
    ledger.assert_clean()
    assert ledger.answers["queued"] == len(ids), ledger.figures()
    assert ledger.statuses["succeeded"] == len(ids), ledger.figures()


async def test_4_postgres_restart_while_webhooks_arrive(
    stack: Stack, db: Database, client: Any
) -> None:
    ledger = Ledger("PostgreSQL restart (immediate) under load")
    grant, ids = await grant_with_messages(db, stack, 60)

    async def fault() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.pg.stop, "immediate")
        ledger.fault_at = time.monotonic()
        await asyncio.sleep(2.0)
        await asyncio.to_thread(stack.pg.start)

    await asyncio.gather(
        deliver(ledger, client, [truncated(grant, m) for m in ids], concurrency=2, pace_s=0.1),
        fault(),
    )
    await db.engine.dispose()  # the test's own pool saw the restart too
    await finish(ledger, db)
    assert ledger.max_latency_s < 5, ledger.figures()  # 503 fast, never a hang


async def test_5_duplicate_and_out_of_order_deliveries(
    stack: Stack, db: Database, client: Any
) -> None:
    ledger = Ledger("duplicate + out-of-order deliveries, interleaved")
    account = await create_nylas_account(db)
    grant = account.grant_id
    assert grant is not None
    deliveries = []
    now = int(time.time())
    for i in range(15):
        mid = f"dup-{i}"
        base = {
            "id": mid,
            "grant_id": grant,
            "body": "<p>x</p>",
            "thread_id": f"t{i}",
            "folders": ["INBOX"],
            "date": now,
        }
        old = notification("message.created", {**base, "subject": "v1"}, grant_id=grant, time_=now)
        new = notification(
            "message.updated", {**base, "subject": "v2"}, grant_id=grant, time_=now + 5
        )
        deliveries += [new, old, new, old, old]  # newest first, each at least twice
    random.Random(5).shuffle(deliveries)
    await deliver(ledger, client, deliveries, concurrency=8)
    ledger.fault_at = time.monotonic()
    await finish(ledger, db)
    assert ledger.answers["queued"] == 30 and ledger.answers["duplicate"] == 45
    async with db.sessionmaker() as s:
        subjects = (
            (await s.execute(sa.text("SELECT subject FROM message WHERE provider_id LIKE 'dup-%'")))
            .scalars()
            .all()
        )
    assert sorted(subjects) == ["v2"] * 15  # the older notification never overwrote the newer


async def test_6_smtp_drops_the_connection_after_data(stack: Stack, db: Database) -> None:
    """The server took the message but its answer is lost: never sent twice; dead-lettered."""
    from tests.smtp_fixtures import create_send_event, create_smtp_account, start_smtp
    from worker.app import make_celery
    from worker.dispatch import publish

    ledger = Ledger("SMTP drops the connection after DATA")
    settings = Settings(database_url=stack.pg.url)
    celery = make_celery(Settings(redis_url=stack.redis.url), publisher_only=True)
    dropping, healthy = start_smtp(mode="drop_after_data"), start_smtp(mode="ok")
    try:
        accounts = [
            await create_smtp_account(db, settings, smtp=peer.credential())
            for peer in (dropping, healthy)
        ]
        for i in range(12):
            account = accounts[i % 2]
            event_id, task_id, _ = await create_send_event(
                db,
                account=account,
                kwargs={"to": ["bob@example.org"], "subject": f"send {i}", "body_text": "hello"},
            )
            ledger.sent += 1
            async with db.sessionmaker() as s:
                kwargs = (await s.get(Event, event_id)).task_kwargs  # type: ignore[union-attr]
            assert publish(
                celery,
                task_name="postroom.mail.send",
                event_id=event_id,
                task_id=task_id,
                kwargs=kwargs,
            )
            ledger.answers["queued"] += 1
            ledger.accepted.add(str(event_id))
        ledger.fault_at = time.monotonic()
        await finish(ledger, db)
        subjects = [r.message["subject"] for r in dropping.received + healthy.received]
        assert len(subjects) == len(set(subjects)) == 12, subjects  # each reached SMTP once
        assert ledger.statuses["dead"] == 6 and ledger.statuses["succeeded"] == 6
        async with db.sessionmaker() as s:
            kinds = (
                (await s.execute(sa.text("SELECT DISTINCT exception_type FROM dead_letter")))
                .scalars()
                .all()
            )
        assert kinds == ["DeliveryUnknown"]
    finally:
        dropping.stop()
        healthy.stop()
