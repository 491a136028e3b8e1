"""postroom.mail.send through the real Celery worker, into real aiosmtpd servers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import DeadLetter, Event, OutboundMessage, SendDraft
from tests.helpers import wait_for
from tests.smtp_fixtures import create_send_event, create_smtp_account

pytestmark = pytest.mark.usefixtures("worker")

SEND = dict(
    to=["bob@example.org"],
    bcc=["hidden@example.net"],
    subject="Through the worker",
    body_text="Sent by a Celery task.",
)


@pytest.fixture(scope="module")
def publisher(settings: Any) -> Any:
    from worker.app import make_celery

    return make_celery(settings, publisher_only=True)


async def _publish(db: Any, publisher: Any, event_id: uuid.UUID, task_id: str) -> None:
    from worker.dispatch import publish

    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    assert publish(
        publisher,
        task_name="postroom.mail.send",
        event_id=event_id,
        task_id=task_id,
        kwargs=event.task_kwargs,
    )


async def _finished(db: Any, event_id: uuid.UUID, timeout: float = 30.0) -> Event:
    async def check() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, event_id)
            return ev if ev and ev.status in ("succeeded", "ignored", "dead") else None

    return await wait_for(check, timeout=timeout, message=f"event {event_id} to finish")


async def _dead_letters(db: Any, event_id: Any) -> list[DeadLetter]:
    query = sa.select(DeadLetter).where(DeadLetter.event_id == event_id)
    async with db.sessionmaker() as s:
        return list((await s.execute(query)).scalars())


async def test_send_task_delivers_once_and_succeeds(db, settings, publisher, smtp_server) -> None:
    peer = smtp_server(auth=True)
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, created = await create_send_event(db, account=account, kwargs=SEND, key="k1")
    assert created
    # The same Idempotency-Key again: the API finds the event and publishes nothing new.
    again_id, _, created_again = await create_send_event(db, account=account, kwargs=SEND, key="k1")
    assert not created_again and again_id == event_id
    await _publish(db, publisher, event_id, task_id)
    # A duplicate delivery of the same task message changes nothing either.
    await _publish(db, publisher, event_id, task_id)

    event = await _finished(db, event_id)
    assert event.status == "succeeded", event.last_error
    assert event.result["status"] == "success"
    # A count (API.md "Sending"); the accepted addresses are in the ledger row only.
    assert event.result["recipients_sent"] == 2
    async with db.sessionmaker() as s:
        mine = sa.select(OutboundMessage).where(OutboundMessage.account_id == account.id)
        [ledger] = (await s.execute(mine)).scalars().all()
    assert sorted(ledger.recipients) == ["bob@example.org", "hidden@example.net"]
    await wait_for(lambda: _received(peer, 1), timeout=5, message="one message at the server")
    assert len(peer.received) == 1
    msg = peer.received[0].message
    assert msg["Subject"] == "Through the worker" and msg["Bcc"] is None
    assert msg["Message-ID"] == event.result["message_id_header"]


async def _received(peer: Any, n: int) -> bool:
    return len(peer.received) >= n


async def test_5xx_ends_in_a_dead_letter_with_the_server_answer(
    db, settings, publisher, smtp_server
) -> None:
    peer = smtp_server(mode="5xx")
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    await _publish(db, publisher, event_id, task_id)
    event = await _finished(db, event_id)
    assert event.status == "dead"
    assert event.attempts == 1, "a 5xx is permanent: no retries"
    [dead] = await _dead_letters(db, event_id)
    assert dead.event_id == event_id and dead.exception_type == "SmtpRejected"
    assert "554 5.7.1" in dead.exception_message
    assert "policy violation" not in dead.exception_message  # the codes, not the peer's words
    assert peer.received == []


async def test_4xx_then_2xx_is_retried_and_sent_once(db, settings, publisher, smtp_server) -> None:
    peer = smtp_server(mode="4xx_then_2xx")
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    await _publish(db, publisher, event_id, task_id)
    event = await _finished(db, event_id)
    assert event.status == "succeeded", event.last_error
    assert event.attempts == 2
    assert peer.handler.data_calls == 2 and len(peer.received) == 1


async def test_lost_answer_after_data_is_dead_lettered_not_resent(
    db, settings, publisher, smtp_server
) -> None:
    peer = smtp_server(mode="drop_after_data")
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    await _publish(db, publisher, event_id, task_id)
    event = await _finished(db, event_id)
    assert event.status == "dead"
    [dead] = await _dead_letters(db, event_id)
    assert dead.exception_type == "DeliveryUnknown"
    assert len(peer.received) == 1


async def test_account_of_another_tenant_is_refused(db, settings, publisher, smtp_server) -> None:
    peer = smtp_server()
    victim = await create_smtp_account(db, settings, smtp=peer.credential())
    attacker = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, _ = await create_send_event(
        db, account=attacker, kwargs={**SEND, "account_id": str(victim.id)}
    )
    await _publish(db, publisher, event_id, task_id)
    event = await _finished(db, event_id)
    assert event.status == "dead" and event.attempts == 1
    [dead] = await _dead_letters(db, event_id)
    assert dead.exception_type == "PermissionDenied"
    assert peer.received == []


async def test_message_queued_with_the_mail_in_its_kwargs_sends_the_draft_and_drops_the_copy(
    db, settings, publisher, smtp_server, redis_server
) -> None:
    """A task message published before the drafts moved out of the kwargs (still in Redis
    at the upgrade): the draft is what is sent, and the copy in the message is dropped before
    the result backend stores the request."""
    import json

    import redis.asyncio as aioredis

    from worker.dispatch import publish

    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    stale = {**SEND, "subject": "Stale copy in the message", "body_html": None}
    assert publish(
        publisher,
        task_name="postroom.mail.send",
        event_id=event_id,
        task_id=task_id,
        kwargs={**event.task_kwargs, **stale},
    )
    event = await _finished(db, event_id)
    assert event.status == "succeeded", event.last_error
    await wait_for(lambda: _received(peer, 1), timeout=5, message="one message at the server")
    assert peer.received[0].message["Subject"] == "Through the worker"

    r = aioredis.Redis.from_url(redis_server.url)
    try:
        meta = json.loads(await r.get(f"celery-task-meta-{task_id}"))
    finally:
        await r.aclose()
    assert meta["status"] == "SUCCESS" and meta["result"]["recipients_sent"] == 2
    assert set(meta["kwargs"]) == {"event_id", "account_id", "tenant_id", "user_id"}
    assert "bob@example.org" not in json.dumps(meta) and "Stale copy" not in json.dumps(meta)


async def test_send_without_a_draft_is_dead_and_sends_nothing(
    db, settings, publisher, smtp_server
) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    async with db.transaction() as s:
        await s.execute(sa.delete(SendDraft).where(SendDraft.event_id == event_id))
    await _publish(db, publisher, event_id, task_id)
    event = await _finished(db, event_id)
    assert event.status == "dead" and event.attempts == 1
    [dead] = await _dead_letters(db, event_id)
    assert dead.exception_type == "ValidationFailed" and "no draft" in dead.exception_message
    assert peer.received == []
