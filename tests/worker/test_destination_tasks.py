"""Through the real worker: the destination check made again at connect time, SMTP AUTH
refusals as permanent failures, and failure texts without a foreign server's words."""

from __future__ import annotations

from typing import Any

import pytest

from database.models import DeadLetter, Event
from tests import banner_server as banners
from tests.banner_server import BANNER, assert_no_peer_words
from tests.smtp_fixtures import USERNAME, create_send_event, create_smtp_account
from tests.worker.test_mail_tasks import _queue
from tests.worker.test_send_task import SEND, _dead_letters, _finished, _publish
from tests.worker.test_send_task import publisher as publisher

banner_server = banners.banner_server
pytestmark = pytest.mark.usefixtures("worker")


async def _send_and_finish(db: Any, publisher: Any, account: Any) -> tuple[Event, DeadLetter]:
    event_id, task_id, _ = await create_send_event(db, account=account, kwargs=SEND)
    await _publish(db, publisher, event_id, task_id)
    event = await _finished(db, event_id)
    [dead] = await _dead_letters(db, event_id)
    return event, dead


async def test_credentials_and_no_auth_are_dead_lettered_at_once(
    db, settings, publisher, smtp_server
) -> None:
    relay = smtp_server(auth=False)
    smtp = {**relay.credential(), "username": USERNAME, "password": "pw-not-sent"}
    account = await create_smtp_account(db, settings, smtp=smtp)
    event, dead = await _send_and_finish(db, publisher, account)
    assert event.status == "dead" and event.attempts == 1, "permanent: no retries"
    assert dead.exception_type == "SmtpAuthUnavailable"
    assert dead.exception_message == (
        "The SMTP server does not offer AUTH, but the account has SMTP credentials; "
        "refusing to send them unauthenticated."
    )
    assert relay.received == []


async def test_a_host_now_inward_is_refused_when_the_worker_connects(
    db, settings, publisher
) -> None:
    # Stored as if it had passed the check when created (its DNS since pointed inward).
    smtp = {"host": "169.254.169.254", "port": 25, "security": "none"}
    account = await create_smtp_account(db, settings, smtp=smtp)
    event, dead = await _send_and_finish(db, publisher, account)
    assert event.status == "dead" and event.attempts == 1
    assert dead.exception_type == "MailHostNotAllowed"
    assert "SMTP host is not allowed" in dead.exception_message
    assert "169.254" not in dead.exception_message and "169.254" not in (event.last_error or "")


async def test_an_imap_sync_to_an_inward_host_is_refused_by_the_worker(db, settings) -> None:
    account = await create_smtp_account(
        db,
        settings,
        smtp={"host": "mx.example.org", "port": 25, "security": "none"},
        imap={"host": "10.9.8.7", "port": 993, "security": "tls", "username": "u", "password": "p"},
    )
    ids = {"account_id": str(account.id), "tenant_id": str(account.tenant_id)}
    event_id = await _queue(
        db,
        settings,
        task_name="postroom.mail.sync_account",
        kwargs={**ids, "user_id": str(account.user_id), "folder": None, "full": False},
        tenant_id=account.tenant_id,
        account_id=account.id,
    )
    event = await _finished(db, event_id)
    assert event.status == "dead" and event.attempts == 1
    assert "IMAP host is not allowed" in (event.last_error or "")
    assert "10.9.8.7" not in (event.last_error or "")


async def test_a_hostile_banner_never_reaches_the_dead_letter(
    db, settings, publisher, banner_server
) -> None:
    peer = banner_server(b"554 " + BANNER.encode() + b" redis-ish\r\n")
    smtp = {"host": "127.0.0.1", "port": peer.port, "security": "none"}
    account = await create_smtp_account(db, settings, smtp=smtp)
    event, dead = await _send_and_finish(db, publisher, account)
    assert event.status == "dead" and event.attempts == 1
    assert peer.connections == 1
    assert dead.exception_message == "The SMTP server answered 554 to the connection."
    assert_no_peer_words(dead.exception_message, peer.port)
    assert_no_peer_words(event.last_error or "", peer.port)
