"""Webhook storms (issue 12 item 4): every delivery acknowledged, every event processed once,
and repeated `message.updated` notifications about one message coalesced into one piece of
work that keeps the newest state. Through the real API app, Redis and the session's workers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Event, Message, Tenant
from tests.api.keys import make_caller
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, short_consumers, wait_for

pytestmark = pytest.mark.usefixtures("worker")

FINAL = ("succeeded", "ignored", "dead", "cancelled")


@pytest.fixture(scope="module")
def celery_app(settings: Any) -> Any:
    from worker.app import make_celery

    return make_celery(settings)


async def _events(db: Any) -> list[Event]:
    """The notifications' events (a new message also starts classify jobs of its own)."""
    async with db.sessionmaker() as s:
        return list(
            (
                await s.execute(
                    sa.select(Event).where(Event.task_name == "postroom.events.process")
                )
            ).scalars()
        )


async def _all_final(db: Any, n: int, timeout: float) -> list[Event]:
    async def check() -> list[Event] | None:
        async with db.sessionmaker() as s:
            done = (
                await s.execute(
                    sa.select(sa.func.count())
                    .select_from(Event)
                    .where(Event.task_name == "postroom.events.process", Event.status.in_(FINAL))
                )
            ).scalar_one()
        return await _events(db) if done >= n else None

    return await wait_for(check, timeout=timeout, interval=0.5, message=f"{n} final events")


async def _storm(client: Any, db: Any, n: int, *, timeout: float) -> None:
    account = await create_nylas_account(db)
    payloads = [
        notification("message.created", make_message(account.grant_id, f"storm-{i}"))
        for i in range(n)
    ]
    # Nylas retries some deliveries: one in ten arrives twice, concurrently with the first.
    resent = payloads[::10]
    sem = asyncio.Semaphore(64)

    async def send(p: dict[str, Any]) -> tuple[int, str | None]:
        async with sem:
            r = await post_webhook(client, p)
            return r.status_code, r.json().get("status") if r.status_code == 200 else r.text

    answers = await asyncio.gather(*(send(p) for p in payloads + resent))
    codes = Counter(code for code, _ in answers)
    assert codes == {200: n + len(resent)}, codes
    kinds = Counter(kind for _, kind in answers)
    assert kinds == {"queued": n, "duplicate": len(resent)}, kinds

    events = await _all_final(db, n, timeout)
    assert len(events) == n  # one row per notification id, duplicates included
    assert Counter(e.status for e in events) == {"succeeded": n}
    for e in events:
        # Exactly once: one attempt, which is the one that succeeded.
        assert [h["outcome"] for h in e.history] == ["succeeded"], (e.id, e.history)
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                sa.select(Message.provider_id, sa.func.count())
                .where(Message.account_id == account.id)
                .group_by(Message.provider_id)
            )
        ).all()
    assert len(rows) == n and all(count == 1 for _, count in rows)


async def test_a_burst_of_webhooks_is_acknowledged_and_processed_exactly_once(
    client, db, empty_database
) -> None:
    # Counts every process event: an empty database, once the worker is idle.
    await _storm(client, db, 300, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_a_storm_of_20000_webhooks_is_acknowledged_and_processed_exactly_once(
    client, db, empty_database
) -> None:
    await _storm(client, db, 20_000, timeout=3300)


async def test_repeated_updates_are_coalesced_and_keep_the_newest_state(
    client, db, celery_app, empty_database
) -> None:
    caller = await make_caller(db)
    async with db.sessionmaker() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
    account = await create_nylas_account(db, tenant=tenant)
    now = int(time.time())
    states = [
        dict(subject=f"v{i}", unread=i % 2 == 0, starred=i == 4, folders=["INBOX"])
        for i in range(5)
    ]
    # The newest state (highest `time`) is posted in the middle: arrival order is not version.
    order = [0, 1, 4, 2, 3]
    short_consumers(celery_app, on=False)
    try:
        ids = []
        for i in order:
            msg = make_message(account.grant_id, "m-hot", **states[i])
            r = await post_webhook(client, notification("message.updated", msg, time_=now - 10 + i))
            assert r.status_code == 200 and r.json()["status"] == "queued"
            ids.append(r.json()["event_id"])
    finally:
        short_consumers(celery_app, on=True)

    events = {str(e.id): e for e in await _all_final(db, len(ids), timeout=30)}

    def coalesced(e: Event) -> bool:
        # Done by a sibling's work: succeeded, and its result says whose.
        return e.status == "succeeded" and (e.result or {}).get("status") == "coalesced"

    statuses = Counter(e.status for e in events.values())
    folded = [k for k, e in events.items() if coalesced(e)]
    assert len(folded) >= 1, statuses
    assert statuses["succeeded"] + statuses["ignored"] == len(ids), statuses
    workers = {k for k, e in events.items() if not coalesced(e)}
    for e in events.values():
        if coalesced(e):
            into = e.result["coalesced_into"]
            assert into in workers and events[into].status == "succeeded"
            assert e.tenant_id == account.tenant_id and e.finished_at is not None
            # Never worked on: no attempt was spent on it.
            assert e.attempts == 0
    done = sum(e.result.get("coalesced", 0) for e in events.values() if e.result)
    assert done == len(folded)

    async with db.sessionmaker() as s:
        [row] = (
            (await s.execute(sa.select(Message).where(Message.account_id == account.id)))
            .scalars()
            .all()
        )
    assert (row.subject, row.unread, row.starred) == ("v4", True, True)
    assert row.provider_version == now - 6

    # The API shows where a coalesced event went.
    some = folded[0]
    r = await client.get(f"/v1/events/{some}", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["coalesced_into"] == events[some].result["coalesced_into"]


async def test_updates_of_different_messages_or_grants_are_not_coalesced(
    client, db, celery_app, empty_database
) -> None:
    a = await create_nylas_account(db)
    b = await create_nylas_account(db)
    short_consumers(celery_app, on=False)
    try:
        for account, mid in ((a, "m-1"), (a, "m-2"), (b, "m-1")):
            msg = make_message(account.grant_id, mid, subject=f"{mid}@{account.grant_id}")
            r = await post_webhook(client, notification("message.updated", msg))
            assert r.status_code == 200
    finally:
        short_consumers(celery_app, on=True)
    events = await _all_final(db, 3, timeout=30)
    assert Counter(e.status for e in events) == {"succeeded": 3}
    async with db.sessionmaker() as s:
        count = (await s.execute(sa.select(sa.func.count()).select_from(Message))).scalar_one()
    assert count == 3
