"""An IMAP server cannot flood the push listener or starve the bulk workers (issue 20, item 2).

- A fake server offering NOTIFY answers every IDLE with 1,000 `* STATUS` lines about folders
  that do not exist (new names each round), to the real listener process: the event table
  grows by a few rows for that account, not by thousands.
- A push sync per (account, folder) that has not finished is never inserted twice.
- A task that finds the account's IMAP connections taken gives its worker back at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Credential, Event, Provider
from database.repositories.accounts.push_leases import Leased
from services.crypto import encrypt_json
from services.imap.push import queue_sync
from tests.api.keys import make_caller
from tests.helpers import wait_for
from tests.hostile.fake_imap import FakeImap
from tests.peers import RedisServer
from tests.test_push import idling, listener

pytestmark = pytest.mark.usefixtures("empty_database")

FOLDERS_PER_ROUND = 1_000
WATCH_S = 20.0


async def _account_on(db: Any, settings: Any, fake: FakeImap) -> tuple[Any, uuid.UUID]:
    caller = await make_caller(db)
    creds = {
        "imap": {
            "host": "127.0.0.1",
            "port": fake.port,
            "security": "none",
            "username": "u",
            "password": "p",
            "verify_tls": False,
        }
    }
    async with db.transaction() as s:
        account = Account(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            provider=Provider.imap,
            email="flood@example.com",
            sync_interval_s=3600,
        )
        s.add(account)
        await s.flush()
        s.add(
            Credential(
                tenant_id=caller.tenant_id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, creds),
            )
        )
    return caller, account.id


async def _rows(db: Any, account_id: uuid.UUID) -> int:
    async with db.transaction() as s:
        stmt = sa.select(sa.func.count()).select_from(Event).where(Event.account_id == account_id)
        return int((await s.execute(stmt)).scalar_one())


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("per_round", "most"),
    [
        # The sync on connect (INBOX) and one "list folders" sync.
        (FOLDERS_PER_ROUND, 4),
        # Few names a round, each new: a sync of their own for the first 4 (a new folder is
        # news), then the one list sync per window.
        (2, 7),
    ],
)
async def test_a_notify_flood_adds_a_few_rows_not_thousands(
    db: Any, settings: Any, per_round: int, most: int
) -> None:
    fake = await FakeImap({}, notify_flood=per_round).start()
    _, account_id = await _account_on(db, settings, fake)
    # Production's list window (60 s); IDLE renewed every 2 s so rounds come quickly.
    proc = listener("notify-flood")
    try:

        async def watching() -> bool:
            return str(account_id) in idling(proc)

        await wait_for(watching, timeout=60, message="the listener to IDLE on the account")
        rounds_before = fake.idle_rounds
        await asyncio.sleep(WATCH_S)
        rows = await _rows(db, account_id)
        rounds = fake.idle_rounds - rounds_before
    finally:
        proc.stop()
        await fake.stop()
    named = max(rounds, 1) * per_round
    print(f"{rows} events for {named} folder names over {rounds} IDLE rounds in {WATCH_S} s")
    assert rows <= most, f"{rows} events for {named} folder names in {WATCH_S:.0f} s"
    assert rounds >= 3, f"only {rounds} IDLE rounds: the flood did not run"


@pytest.fixture
def quiet_broker() -> Any:
    """A Redis no worker consumes: the queued syncs stay unfinished."""
    server = RedisServer().start()
    yield server
    server.stop()


async def test_an_unfinished_push_sync_is_not_queued_twice(
    db: Any, settings: Any, quiet_broker: Any
) -> None:
    from worker.config import make_celery
    from worker.dispatch import AsyncPublisher

    caller = await make_caller(db)
    async with db.transaction() as s:
        account = Account(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            provider=Provider.imap,
            email="dup@example.com",
        )
        s.add(account)
    leased = Leased(
        account_id=account.id, tenant_id=caller.tenant_id, user_id=caller.user_id, version="1"
    )
    quiet = settings.model_copy(update={"redis_url": quiet_broker.url})
    publisher = AsyncPublisher(make_celery(quiet, publisher_only=True), quiet.redis_url, timeout=2)
    made = []
    for folder in ("Archive", "Archive", "Archive", None, None, "Other"):
        made.append(
            await queue_sync(db, publisher, account=leased, folder=folder, stale_after_s=600)
        )
    assert [m is not None for m in made] == [True, False, False, True, False, True]
    assert await _rows(db, account.id) == 3


async def test_a_task_without_a_connection_slot_gives_its_worker_back_at_once(
    settings: Any,
) -> None:
    from services.imap.slots import AccountBusy, imap_slot

    account = uuid.uuid4()
    limited = settings.model_copy(update={"imap_max_connections": 2})
    async with imap_slot(limited, account), imap_slot(limited, account):
        started = time.monotonic()
        with pytest.raises(AccountBusy):
            async with imap_slot(limited, account):
                pass
        assert time.monotonic() - started < 0.5, "the task slept in its worker"


async def _start_latency(db: Any, settings: Any, account: Any) -> float:
    """Seconds from queuing a sync of `account` until a worker starts it (it is then awaited
    to the end, so the next measurement starts from a quiet account)."""
    from tests.worker.test_latency_classes import queue_sync as queue_api_sync

    queued = time.monotonic()
    event_id = await queue_api_sync(db, settings, account)
    started: list[float] = []

    async def begun() -> bool:
        async with db.transaction() as s:
            event = await s.get(Event, event_id)
        if event is not None and event.started_at is not None and not started:
            started.append(time.monotonic())
        return event is not None and event.finished_at is not None

    await wait_for(begun, timeout=120, interval=0.05, message="the other tenant's sync")
    return (started[0] if started else time.monotonic()) - queued


@pytest.mark.timeout(300)
async def test_another_tenants_sync_starts_in_its_usual_time_during_a_flood(
    db: Any, settings: Any, worker: Any, dovecot: Any, mailbox_user: str
) -> None:
    from tests.imap_support import create_imap_account

    other = await create_imap_account(db, settings, dovecot, mailbox_user)
    usual = min([await _start_latency(db, settings, other) for _ in range(2)])
    fake = await FakeImap({}, notify_flood=FOLDERS_PER_ROUND).start()
    _, flooded = await _account_on(db, settings, fake)
    proc = listener("notify-flood-workers")
    try:

        async def watching() -> bool:
            return str(flooded) in idling(proc)

        await wait_for(watching, timeout=60, message="the listener to IDLE on the account")
        await asyncio.sleep(5)  # the flood is under way
        during = [await _start_latency(db, settings, other) for _ in range(3)]
    finally:
        proc.stop()
        await fake.stop()
    print(f"sync start: usual {usual:.2f} s, during the flood {[round(d, 2) for d in during]}")
    assert max(during) < max(3.0, 4 * usual), (usual, during)
