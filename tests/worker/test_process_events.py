"""postroom.events.process through a real Celery worker: webhooks become message rows."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Attachment, DeadLetter, Event, Folder, Message
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, wait_for

pytestmark = pytest.mark.usefixtures("worker")


async def finished_event(db, event_id: str, timeout: float = 20.0) -> Event:
    async def check() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, uuid.UUID(event_id))
            return ev if ev and ev.status in ("succeeded", "ignored", "dead") else None

    return await wait_for(check, timeout=timeout, message=f"event {event_id} to finish")


async def messages_of(db, account: Account) -> list[Message]:
    async with db.sessionmaker() as s:
        rows = await s.execute(sa.select(Message).where(Message.account_id == account.id))
        return list(rows.scalars())


async def deliver(client, db, payload: dict[str, Any]) -> Event:
    r = await post_webhook(client, payload)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    return await finished_event(db, r.json()["event_id"])


async def test_message_created_is_stored_for_the_grant_account(client, db) -> None:
    account = await create_nylas_account(db)
    msg = make_message(
        account.grant_id,
        "msg-1",
        subject="Quarterly report",
        attachments=[
            {
                "id": "a1",
                "filename": "r.pdf",
                "content_type": "application/pdf",
                "size": 1234,
                "is_inline": False,
            }
        ],
    )
    event = await deliver(client, db, notification("message.created", msg))
    assert event.status == "succeeded", event.last_error
    assert event.attempts == 1
    assert event.tenant_id == account.tenant_id
    assert event.task_ids and event.history[-1]["outcome"] == "succeeded"
    assert event.history[-1]["duration_ms"] is not None
    [row] = await messages_of(db, account)
    assert row.subject == "Quarterly report"
    assert row.tenant_id == account.tenant_id
    assert row.from_email == "ann@example.org"
    assert row.text == "Hello Bob"
    assert row.has_attachments
    async with db.sessionmaker() as s:
        atts = (
            (await s.execute(sa.select(Attachment).where(Attachment.message_id == row.id)))
            .scalars()
            .all()
        )
        folders = (
            (await s.execute(sa.select(Folder).where(Folder.account_id == account.id)))
            .scalars()
            .all()
        )
    assert [(a.filename, a.size, a.content_type) for a in atts] == [
        ("r.pdf", 1234, "application/pdf")
    ]
    assert [(f.name, f.role) for f in folders] == [("INBOX", "inbox")]
    assert row.folder_id == folders[0].id


async def test_truncated_notification_fetches_the_message_through_the_sdk(
    client, db, fake_nylas
) -> None:
    account = await create_nylas_account(db)
    full = make_message(account.grant_id, "big-1", subject="Large", body="<p>the whole body</p>")
    fake_nylas.put_message(account.grant_id, full)
    stripped = {k: v for k, v in full.items() if k != "body"}
    event = await deliver(client, db, notification("message.created.truncated", stripped))
    assert event.status == "succeeded", event.last_error
    [row] = await messages_of(db, account)
    assert row.html == "<p>the whole body</p>"
    fetches = fake_nylas.requests_to(f"/v3/grants/{account.grant_id}/messages/big-1")
    assert len(fetches) == 1
    assert fetches[0].headers["Authorization"].startswith("Bearer ")


async def test_suffix_combinations_route_by_prefix(client, db, fake_nylas) -> None:
    account = await create_nylas_account(db)
    full = make_message(account.grant_id, "m-combo")
    fake_nylas.put_message(account.grant_id, full)
    meta = {k: v for k, v in full.items() if k not in ("body", "snippet", "attachments")}
    event = await deliver(
        client, db, notification("message.created.cleaned.transformed.truncated", meta)
    )
    assert event.status == "succeeded", event.last_error
    assert len(await messages_of(db, account)) == 1


async def test_updated_before_created_and_stale_created_do_not_regress(client, db) -> None:
    account = await create_nylas_account(db)
    newer = make_message(account.grant_id, "m-ooo", subject="v2", unread=False)
    older = make_message(account.grant_id, "m-ooo", subject="v1", unread=True)
    # Notification times are versions; both inside the accepted window (recent).
    now = int(time.time())
    first = await deliver(client, db, notification("message.updated", newer, time_=now - 100))
    assert first.status == "succeeded"
    late = await deliver(client, db, notification("message.created", older, time_=now - 200))
    assert late.status == "ignored"
    [row] = await messages_of(db, account)
    assert (row.subject, row.unread) == ("v2", False)


async def test_deleted_message_is_not_resurrected_by_a_late_created(client, db) -> None:
    account = await create_nylas_account(db)
    msg = make_message(account.grant_id, "m-del")
    deleted = await deliver(
        client, db, notification("message.deleted", {"id": "m-del", "grant_id": account.grant_id})
    )
    assert deleted.status == "succeeded"
    late = await deliver(client, db, notification("message.created", msg))
    assert late.status == "ignored"
    [row] = await messages_of(db, account)
    assert row.deleted_at is not None


async def test_message_deleted_marks_an_existing_message(client, db) -> None:
    account = await create_nylas_account(db)
    await deliver(client, db, notification("message.created", make_message(account.grant_id, "m2")))
    await deliver(
        client, db, notification("message.deleted", {"id": "m2", "grant_id": account.grant_id})
    )
    [row] = await messages_of(db, account)
    assert row.deleted_at is not None
    assert row.subject == "Hello"


async def test_unknown_grant_ends_ignored_with_reason(client, db) -> None:
    # Tenant-less: its own random grant and message id tell this event's rows apart.
    grant, nid = f"nobody-{uuid.uuid4().hex}", f"x-{uuid.uuid4().hex}"
    event = await deliver(client, db, notification("message.created", make_message(grant, nid)))
    assert event.status == "ignored"
    assert "unknown grant" in (event.last_error or "")
    stored = sa.select(sa.func.count()).select_from(Message).where(Message.provider_id == nid)
    async with db.sessionmaker() as s:
        assert (await s.execute(stored)).scalar() == 0


async def test_unknown_type_ends_ignored(client, db) -> None:
    account = await create_nylas_account(db)
    event = await deliver(
        client, db, notification("calendar.created", {"id": "c1"}, grant_id=account.grant_id)
    )
    assert event.status == "ignored"
    assert "calendar.created" in (event.last_error or "")


@pytest.mark.parametrize("kind", ["grant.expired", "grant.deleted"])
async def test_grant_expired_sets_reauth_required(client, db, kind) -> None:
    account = await create_nylas_account(db)
    event = await deliver(
        client,
        db,
        notification(
            kind,
            {"grant_id": account.grant_id, "code": 25009, "provider": "google"},
            grant_id=account.grant_id,
        ),
    )
    assert event.status == "succeeded"
    async with db.sessionmaker() as s:
        acc = await s.get(Account, account.id)
    assert acc is not None and acc.status == "reauth_required"


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "retry_after": 1},
        {"status": 503},
        {"status": 502, "html": True},
        {"status": 0, "delay": 7},
    ],
    ids=["429-retry-after", "503", "html-502", "timeout"],
)
async def test_transient_provider_errors_retry_then_succeed(client, db, fake_nylas, fault) -> None:
    account = await create_nylas_account(db)
    fake_nylas.put_message(account.grant_id, make_message(account.grant_id, "m-t"))
    fake_nylas.fail("/messages/m-t$", **fault)
    event = await deliver(
        client,
        db,
        notification("message.created.truncated", {"id": "m-t", "grant_id": account.grant_id}),
    )
    assert event.status == "succeeded", event.last_error
    assert event.attempts == 2
    assert event.history[0]["outcome"] == "retrying"
    assert len(await messages_of(db, account)) == 1


async def test_provider_404_is_permanent_and_dead_lettered(client, db) -> None:
    account = await create_nylas_account(db)
    event = await deliver(
        client,
        db,
        notification("message.created.truncated", {"id": "gone", "grant_id": account.grant_id}),
    )
    assert event.status == "dead"
    assert event.attempts == 1
    async with db.sessionmaker() as s:
        mine = sa.select(DeadLetter).where(DeadLetter.event_id == event.id)
        [dl] = (await s.execute(mine)).scalars().all()
    assert dl.event_id == event.id
    assert dl.task_name == "postroom.events.process"
    assert dl.exception_type == "ProviderNotFound"
    assert "404" in dl.exception_message
    assert dl.tenant_id == account.tenant_id
    assert event.tenant_id == account.tenant_id
