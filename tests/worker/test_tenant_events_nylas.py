"""Nylas notifications tell the tenant's application what changed: message.created, .updated,
.deleted and .classified, written in the transaction that stored the change, through the real
webhook route, Redis, the session's workers and the fake Nylas API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from database.models import Event, Tenant
from tests.api.keys import make_caller
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, short_consumers, wait_for
from tests.tenant_feed import about, feed_of, kinds
from tests.worker.test_batch import HAM, all_final, post_all
from tests.worker.test_process_events import deliver

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def celery_app(settings: Any) -> Any:
    from worker.app import make_celery

    return make_celery(settings)


async def test_created_updated_deleted_and_classified_reach_the_feed(client, db) -> None:
    account = await create_nylas_account(db)
    msg = make_message(account.grant_id, "n-1", subject="First", **HAM)
    assert (await deliver(client, db, notification("message.created", msg))).status == "succeeded"
    changed = {**msg, "subject": "Second", "unread": False}
    assert (
        await deliver(client, db, notification("message.updated", changed))
    ).status == "succeeded"
    assert (
        await deliver(
            client, db, notification("message.deleted", {"id": "n-1"}, grant_id=account.grant_id)
        )
    ).status == "succeeded"
    # A second delete, and one of a message never seen: nothing more to tell.
    await deliver(
        client, db, notification("message.deleted", {"id": "n-1"}, grant_id=account.grant_id)
    )
    await deliver(
        client, db, notification("message.deleted", {"id": "never"}, grant_id=account.grant_id)
    )

    events = await feed_of(db, account.tenant_id)
    assert kinds(events) == {
        "message.created": 1,
        "message.classified": 1,
        "message.updated": 1,
        "message.deleted": 1,
    }
    assert events[0]["type"] == "message.created"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    [created] = about(events, "message.created")
    [classified] = about(events, "message.classified")
    [updated] = about(events, "message.updated")
    [deleted] = about(events, "message.deleted")
    assert created["provider_id"] == "n-1" and created["subject"] == "First"
    assert created["account_id"] == str(account.id) and created["deleted"] is False
    assert classified["id"] == created["id"] and classified["spam"]["is_spam"] is False
    assert updated["subject"] == "Second" and updated["unread"] is False
    assert deleted["id"] == created["id"] and deleted["deleted"] is True
    assert "Thanks, I applied" not in str(events)  # never the body


@pytest.mark.xfail(
    strict=False,
    reason="open bug (issue 19 note): a batch can fall back with _TakenOver at still_absorbed, "
    "and then nothing is batched; the events are still emitted once each on the single path",
)
async def test_a_batch_of_waiting_notifications_emits_one_event_each(
    client: Any, db: Any, celery_app: Any
) -> None:
    account = await create_nylas_account(db)
    other = await create_nylas_account(db)
    mine = [make_message(account.grant_id, f"b-{i}", **HAM) for i in range(10)]
    short_consumers(celery_app, on=False)
    try:
        ids = await post_all(client, mine)
        await post_all(client, [make_message(other.grant_id, "o-1", **HAM)])
    finally:
        short_consumers(celery_app, on=True)
    events = await all_final(db, ids)
    assert any((e.result or {}).get("batched") for e in events.values()), "nothing was batched"

    feed = await feed_of(db, account.tenant_id)
    assert kinds(feed) == {"message.created": 10, "message.classified": 10}
    assert sorted(m["provider_id"] for m in about(feed, "message.created")) == sorted(
        m["id"] for m in mine
    )
    assert all(m["spam"] is not None for m in about(feed, "message.classified"))
    theirs = await wait_for(lambda: _n(db, other.tenant_id, 2), message="the other tenant's")
    assert theirs


async def _n(db: Any, tenant_id: Any, n: int) -> bool:
    return len(await feed_of(db, tenant_id)) == n


async def test_a_rolled_back_effect_tells_nothing_and_its_dead_letter_tells_job_failed(
    client, db
) -> None:
    caller = await make_caller(db)
    async with db.sessionmaker() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
    account = await create_nylas_account(db, tenant=tenant)
    # PostgreSQL refuses this row (from_email is varchar(320)): the event dead-letters and
    # its message, had it been written, rolls back with its tenant event.
    bad = make_message(account.grant_id, "poison", **{"from": [{"email": "x" * 400 + "@e.org"}]})
    r = await post_webhook(client, notification("message.created", bad))
    event_id = r.json()["event_id"]

    async def dead() -> bool:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, uuid.UUID(event_id))
            return ev is not None and ev.status == "dead"

    await wait_for(dead, timeout=60, message="the poison event to dead-letter")
    events = await feed_of(db, account.tenant_id)
    assert kinds(events) == {"job.failed": 1}
    shown = (await client.get(f"/v1/events/{event_id}", headers=caller.headers)).json()
    assert events[0]["data"] == {"event": shown}
    assert shown["status"] == "dead" and shown["last_error"]
