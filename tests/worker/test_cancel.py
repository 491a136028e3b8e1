"""POST /v1/events/{id}/cancel with the real worker: a cancelled job never performs its effect."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import DeadLetter, Event
from tests.api.keys import make_caller
from tests.factories import create_tenant
from tests.imap_support import append_corpus, create_imap_account
from tests.smtp_fixtures import create_send_event, create_smtp_account

pytestmark = pytest.mark.usefixtures("worker")

SEND = dict(to=["bob@example.org"], subject="Cancelled", body_text="Never sent.")


@pytest.fixture(scope="module")
def celery_app(settings: Any) -> Any:
    from worker.app import make_celery

    # With the result backend: the test waits for the worker's answer to the task message.
    return make_celery(settings)


async def _event(db: Any, event_id: uuid.UUID) -> Event:
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    assert event is not None
    return event


async def _dead_letters(db: Any, event_id: Any) -> list[DeadLetter]:
    query = sa.select(DeadLetter).where(DeadLetter.event_id == event_id)
    async with db.sessionmaker() as s:
        return list((await s.execute(query)).scalars())


def _publish(celery_app: Any, event: Event, task_id: str) -> Any:
    from worker.dispatch import publish

    assert publish(
        celery_app,
        task_name=event.task_name,
        event_id=event.id,
        task_id=task_id,
        kwargs=event.task_kwargs,
    )
    return celery_app.AsyncResult(task_id)


async def _send_setup(db: Any, settings: Any, smtp_server: Any) -> tuple[Any, Any, Any]:
    peer = smtp_server(auth=True)
    tenant = await create_tenant(db)
    caller = await make_caller(db, tenant=tenant.name)
    account = await create_smtp_account(db, settings, smtp=peer.credential(), tenant=tenant)
    return peer, caller, account


async def test_cancelled_send_never_reaches_the_server(
    db, settings, client, celery_app, smtp_server
) -> None:
    peer, caller, account = await _send_setup(db, settings, smtp_server)
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)

    r = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == str(event_id) and r.json()["status"] == "cancelled"

    # A task message arrives anyway (one still in the broker, or a re-publish): the worker's
    # claim refuses it and the task ends quietly. A fresh task id, so the courtesy revoke of
    # the first one does not stop the message before the claim is what refuses it.
    result = _publish(celery_app, await _event(db, event_id), f"{event_id}.2")
    answer = await asyncio.to_thread(result.get, timeout=30)
    assert answer["status"] == "skipped"
    # Cancelled is final and nothing claimed it (a delivery needs a claim, an attempt), so no
    # task can ever send it: nothing to wait for before looking at the server.
    event = await _event(db, event_id)
    assert event.status == "cancelled" and event.attempts == 0
    assert peer.received == []
    assert await _dead_letters(db, event_id) == []

    task = await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)
    assert task.status_code == 200
    assert task.json()["state"] == "FAILURE"
    assert task.json()["error"]["code"] == "cancelled"

    # Cancelled is final: a second cancel is a conflict.
    again = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    listed = await client.get("/v1/events?status=cancelled", headers=caller.headers)
    assert [e["id"] for e in listed.json()["data"]] == [str(event_id)]


async def test_a_finished_job_cannot_be_cancelled(
    db, settings, client, celery_app, smtp_server
) -> None:
    peer, caller, account = await _send_setup(db, settings, smtp_server)
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    result = _publish(celery_app, await _event(db, event_id), task_id)
    await asyncio.to_thread(result.get, timeout=30)
    assert (await _event(db, event_id)).status == "succeeded"
    assert len(peer.received) == 1

    r = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict" and "succeeded" in r.json()["error"]["message"]
    assert (await _event(db, event_id)).status == "succeeded"


@pytest.mark.parametrize("status", ["processing", "dead"])
async def test_started_or_dead_job_is_409_and_untouched(db, client, status) -> None:
    caller = await make_caller(db)
    event_id = await _raw_event(db, caller.tenant_id, status)
    r = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert r.status_code == 409, r.text
    assert (await _event(db, event_id)).status == status


@pytest.mark.parametrize("status", ["scheduled", "received", "queued", "retrying"])
async def test_waiting_statuses_can_be_cancelled(db, client, status) -> None:
    caller = await make_caller(db)
    event_id = await _raw_event(db, caller.tenant_id, status)
    r = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    event = await _event(db, event_id)
    assert event.status == "cancelled" and event.due_at is None and event.finished_at


async def test_another_tenants_event_is_404_and_untouched(db, client) -> None:
    owner, other = await make_caller(db), await make_caller(db)
    event_id = await _raw_event(db, owner.tenant_id, "queued")
    r = await client.post(f"/v1/events/{event_id}/cancel", headers=other.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await _event(db, event_id)).status == "queued"
    missing = await client.post(f"/v1/events/{uuid.uuid4()}/cancel", headers=owner.headers)
    assert missing.status_code == 404


async def test_the_sweeper_does_not_publish_a_cancelled_event(db, client) -> None:
    from database.repositories.events import rows as events_repo

    caller = await make_caller(db)
    event_id = await _raw_event(db, caller.tenant_id, "queued")
    r = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert r.status_code == 200
    async with db.transaction() as s:
        # Even with a lease that ran out long ago, the sweeper's scan skips it.
        await s.execute(
            sa.update(Event)
            .where(Event.id == event_id)  # type: ignore[arg-type]
            .values(due_at=sa.func.now() - sa.text("interval '1 hour'"))
        )
        due = await events_repo.take_due(s, limit=100, stale_after_s=30)
    assert event_id not in {e.id for e in due}
    assert (await _event(db, event_id)).status == "cancelled"


async def _raw_event(db: Any, tenant_id: uuid.UUID, status: str) -> uuid.UUID:
    """An event in a given state, without a task message (nothing consumes it)."""
    async with db.transaction() as s:
        event = Event(
            tenant_id=tenant_id,
            source="api",
            type="account.sync",
            task_name="postroom.mail.sync_account",
            status=status,
            task_ids=[str(uuid.uuid4())],
        )
        s.add(event)
    return event.id


# -- a workflow step claims through worker/workflows.py: the same refusal ----------------------


async def test_cancelled_workflow_sync_stores_nothing(
    db, settings, client, celery_app, dovecot, mailbox_user
) -> None:
    from database.models import Message
    from database.repositories.events import rows as events_repo

    tenant = await create_tenant(db)
    caller = await make_caller(db, tenant=tenant.name)
    account = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    raw = b"From: a@example.org\r\nSubject: waiting\r\nMessage-ID: <w@x>\r\n\r\nhi\r\n"
    await append_corpus(dovecot, mailbox_user, {}, extra={"INBOX": [raw]})
    kwargs = {
        "account_id": str(account.id),
        "folder": None,
        "full": False,
        "workflow": "sync-and-classify",
        "tenant_id": str(tenant.id),
        "user_id": str(caller.user_id),
    }
    event_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source="api",
            type="workflow.sync-and-classify",
            external_id=None,
            task_name="postroom.mail.sync_account",
            task_id=task_id,
            payload={"kwargs": kwargs},
            stale_after_s=30,
            task_kwargs=kwargs,
            tenant_id=tenant.id,
            user_id=caller.user_id,
            account_id=account.id,
        )
    r = await client.post(f"/v1/events/{event_id}/cancel", headers=caller.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"

    result = _publish(celery_app, await _event(db, event_id), f"{event_id}.2")
    answer = await asyncio.to_thread(result.get, timeout=30)
    assert answer["status"] == "skipped"
    async with db.sessionmaker() as s:
        stored = (
            await s.execute(
                sa.select(sa.func.count())
                .select_from(Message)
                .where(Message.account_id == account.id)  # type: ignore[arg-type]
            )
        ).scalar_one()
    assert stored == 0
    event = await _event(db, event_id)
    assert event.status == "cancelled" and event.attempts == 0 and event.steps == []
    assert await _dead_letters(db, event_id) == []
