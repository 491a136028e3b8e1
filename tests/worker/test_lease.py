"""A running task keeps its claim: a long call outlives the lease without being taken over."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from database.models import Event
from database.repositories.events import rows as events_repo
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, wait_for

pytestmark = pytest.mark.usefixtures("worker")


async def test_a_task_longer_than_its_lease_is_not_taken_over(
    empty_database, client, db, fake_nylas, settings
) -> None:
    # The sweeper below takes due events of every tenant: only this test's may exist.
    assert settings.claim_lease_s == 2
    # Slower than two leases, quicker than the Nylas client's timeout.
    delay = settings.nylas_timeout_s - 0.5
    assert delay > 2 * settings.claim_lease_s
    account = await create_nylas_account(db)
    fake_nylas.put_message(account.grant_id, make_message(account.grant_id, "slow-1"))
    fake_nylas.fail("/messages/slow-1$", status=0, delay=delay)
    r = await post_webhook(
        client,
        notification("message.created.truncated", {"id": "slow-1", "grant_id": account.grant_id}),
    )
    event_id = uuid.UUID(r.json()["event_id"])

    async def processing() -> bool:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, event_id)
            return ev is not None and ev.status == "processing"

    await wait_for(processing, timeout=20, message="the worker to claim the event")
    # While the call runs (over two lease lengths), the sweeper never finds the event due.
    taken: list[uuid.UUID] = []
    for _ in range(int(delay / 0.5) - 1):
        await asyncio.sleep(0.5)
        async with db.transaction() as s:
            taken += [e.id for e in await events_repo.take_due(s, limit=50, stale_after_s=30)]
    assert event_id not in taken

    async def done() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, event_id)
            return ev if ev and ev.status == "succeeded" else None

    event = await wait_for(done, timeout=30, message="the slow event to finish")
    assert event.attempts == 1
    assert event.publish_count == 1


async def test_a_claim_nobody_renews_becomes_due_after_the_lease(
    empty_database, db, settings
) -> None:
    # The sweeper takes due events of every tenant: only this test's may exist.
    event_id = uuid.uuid4()
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source="nylas",
            type="message.created",
            external_id=uuid.uuid4().hex,
            task_name="postroom.events.process",
            task_id="t",
            payload={},
            stale_after_s=30,
        )
        await events_repo.claim(s, event_id=event_id, task_id="t", lease_s=1)

    async def due() -> list[Event]:
        async with db.transaction() as s:
            return await events_repo.take_due(s, limit=50, stale_after_s=30)

    taken = await wait_for(due, timeout=10, interval=0.05, message="the lease to run out")
    assert [e.id for e in taken] == [event_id]
    async with db.sessionmaker() as s:
        status = (await s.execute(sa.select(Event.status).where(Event.id == event_id))).scalar()
    assert status == "queued"
