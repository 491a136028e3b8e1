"""IMAP and POP3 syncs against the session's Dovecot, and the Nylas sync against the fake
Nylas, tell the tenant what changed: one message.created per new message, message.updated for
a change (not for a re-fetch that changed nothing), message.deleted for an expunge or a user's
delete, and one account.sync_completed when a sync has finished all its parts."""

from __future__ import annotations

import time
import uuid
from typing import Any

from database.models import Account
from services.imap.sync import Budget, run_sync
from services.messages.delete import delete_messages
from services.nylas.gateway import NylasGateway
from services.nylas.sync import sync_nylas_account
from services.pop3.sync import run_pop3_sync
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.imap_fixtures import Dovecot
from tests.imap_support import append_corpus, create_imap_account, create_pop3_account
from tests.tenant_feed import about, feed_of, kinds


async def _new_events(db: Any, tenant_id: Any, seen: list[dict[str, Any]]) -> list[dict]:
    events = await feed_of(db, tenant_id)
    fresh = events[len(seen) :]
    seen[:] = events
    return fresh


def _flag_and_expunge(dovecot: Dovecot, user: str) -> None:
    conn = dovecot.client(user)
    try:
        conn.select("INBOX")
        assert conn.uid("STORE", "1:2", "+FLAGS", "(\\Flagged)")[0] == "OK"
        assert conn.uid("STORE", "3:5", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert conn.expunge()[0] == "OK"
    finally:
        conn.logout()


async def test_imap_sync_tells_created_updated_deleted_and_sync_completed(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    await append_corpus(
        dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 30), "Junk": ("spam-1", 10)}
    )
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    sync = dict(tenant_id=account.tenant_id, account_id=account.id)
    seen: list[dict[str, Any]] = []

    # A first sync cut into parts (between folders): the messages as they are stored, and one
    # completion at the end of the last part.
    result = await run_sync(db, settings, **sync, budget=Budget(messages=5, seconds=60))
    assert result.cut
    first = await _new_events(db, account.tenant_id, seen)
    assert set(kinds(first)) == {"message.created"} and len(first) < 40
    while result.cut:
        result = await run_sync(db, settings, **sync, resume=result.resume())
    rest = await _new_events(db, account.tenant_id, seen)
    assert kinds(first + rest) == {"message.created": 40, "account.sync_completed": 1}
    assert rest[-1]["type"] == "account.sync_completed"
    done = rest[-1]["data"]["account"]
    assert done["id"] == str(account.id) and done["last_sync_at"] is not None
    created = about(first + rest, "message.created")
    assert len({m["id"] for m in created}) == 40
    assert {m["folder"] for m in created} == {"INBOX", "Junk"}
    assert all(m["account_id"] == str(account.id) for m in created)

    _flag_and_expunge(dovecot, mailbox_user)
    await run_sync(db, settings, **sync)
    changes = await _new_events(db, account.tenant_id, seen)
    assert kinds(changes) == {
        "message.updated": 2,
        "message.deleted": 3,
        "account.sync_completed": 1,
    }
    assert all(m["starred"] for m in about(changes, "message.updated"))
    assert all(m["deleted"] for m in about(changes, "message.deleted"))

    # A full re-sync fetches every message again; nothing changed, so only the completion.
    await run_sync(db, settings, **sync, full=True)
    assert kinds(await _new_events(db, account.tenant_id, seen)) == {"account.sync_completed": 1}

    # A user's delete through the API's job: one message.deleted, and the next sync adds none.
    victim = about(changes, "message.updated")[0]["id"]
    assert (
        await delete_messages(
            db,
            settings,
            tenant_id=account.tenant_id,
            message_ids=[uuid.UUID(victim)],
            permanent=True,
            nylas=None,
        )
        == 1
    )
    await run_sync(db, settings, **sync)
    after_delete = await _new_events(db, account.tenant_id, seen)
    assert kinds(after_delete) == {"message.deleted": 1, "account.sync_completed": 1}
    assert about(after_delete, "message.deleted")[0]["id"] == victim
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))


async def test_pop3_sync_tells_created_deleted_and_sync_completed(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 8)})
    account = await create_pop3_account(db, settings, dovecot, mailbox_user)
    sync = dict(tenant_id=account.tenant_id, account_id=account.id)
    seen: list[dict[str, Any]] = []

    await run_pop3_sync(db, settings, **sync)
    first = await _new_events(db, account.tenant_id, seen)
    assert kinds(first) == {"message.created": 8, "account.sync_completed": 1}
    assert first[-1]["type"] == "account.sync_completed"
    assert first[-1]["data"]["account"]["provider"] == "pop3"

    _flag_and_expunge(dovecot, mailbox_user)  # three leave the maildrop
    await run_pop3_sync(db, settings, **sync)
    second = await _new_events(db, account.tenant_id, seen)
    assert kinds(second) == {"message.deleted": 3, "account.sync_completed": 1}
    gone = {m["provider_id"] for m in about(second, "message.deleted")}
    assert gone <= {m["provider_id"] for m in about(first, "message.created")}


async def test_nylas_sync_tells_new_and_changed_messages_and_not_its_overlap(
    db: Any, settings: Any, fake_nylas: Any
) -> None:
    gateway = NylasGateway(
        api_key=settings.nylas_api_key.get_secret_value(), api_uri=settings.nylas_api_uri, timeout=5
    )
    account = await create_nylas_account(db)
    now = int(time.time())
    for i in range(5):
        fake_nylas.put_message(
            account.grant_id,
            make_message(account.grant_id, f"s{i}", subject=f"Message {i}", date=now - i * 60),
        )
    seen: list[dict[str, Any]] = []

    async def sync() -> None:
        async with db.sessionmaker() as s:
            fresh = await s.get(Account, account.id)
        await sync_nylas_account(db, account=fresh, nylas=gateway, full=False)

    await sync()
    first = await _new_events(db, account.tenant_id, seen)
    assert kinds(first) == {"message.created": 5, "account.sync_completed": 1}
    # The next sync reads the last hour again: the same messages, nothing to tell but the end.
    await sync()
    assert kinds(await _new_events(db, account.tenant_id, seen)) == {"account.sync_completed": 1}
    # One changed at Nylas: one update.
    fake_nylas.put_message(
        account.grant_id,
        make_message(account.grant_id, "s2", subject="Renamed", date=now - 120),
    )
    await sync()
    changed = await _new_events(db, account.tenant_id, seen)
    assert kinds(changed) == {"message.updated": 1, "account.sync_completed": 1}
    assert about(changed, "message.updated")[0]["subject"] == "Renamed"
