"""POP3 syncs, Nylas syncs and mass deletes in bounded parts, on the real worker.

The session worker runs with POSTROOM_BULK_PART_MESSAGES=250 (tests/conftest.py), so each job
here is big enough to be cut into several parts; each ends like the same work done uncut.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Event, EventStatus, Message
from tests.factories import create_nylas_account, create_tenant
from tests.fakes.nylas_server import make_message
from tests.helpers import wait_for
from tests.imap_fixtures import Dovecot
from tests.imap_support import append_corpus, create_imap_account, create_pop3_account
from tests.worker.test_mail_tasks import _finished, _queue

pytestmark = pytest.mark.usefixtures("worker")


def _ids(account: Any) -> dict[str, str]:
    return {
        "account_id": str(account.id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
    }


async def _sync(db: Any, settings: Any, account: Any, **kw: Any) -> Event:
    event_id = await _queue(
        db,
        settings,
        task_name="postroom.mail.sync_account",
        kwargs={**_ids(account), "folder": None, "full": False, **kw},
        tenant_id=account.tenant_id,
        account_id=account.id,
    )
    return await wait_for(lambda: _finished(db, event_id), timeout=120, message="the sync")


def _parts(event: Event) -> int:
    """How many parts the job took; every part but the last ended `continued`."""
    assert event.status == EventStatus.succeeded, event.last_error
    assert event.progress is not None and not event.progress.get("continues"), event.progress
    parts = int(event.progress.get("parts", 1))
    assert [h["outcome"] for h in event.history].count("continued") == parts - 1
    assert event.attempts == 1  # parts are not attempts
    longest = max(h["duration_ms"] or 0 for h in event.history)
    print(f"\n{event.task_name}: {parts} parts, the longest {longest:.0f} ms")
    return parts


async def _stored(db: Any, account_id: uuid.UUID) -> set[tuple[Any, ...]]:
    async with db.transaction() as s:
        rows = await s.execute(
            sa.select(
                Message.provider_id, Message.message_id_header, Message.subject, Message.unread
            ).where(Message.account_id == account_id, Message.deleted_at.is_(None))
        )
        return {tuple(r) for r in rows}


async def test_a_pop3_sync_in_parts_ends_like_an_uncut_one(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.pop3.sync import run_pop3_sync

    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 700)})
    tenant = await create_tenant(db)
    cut = await create_pop3_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    whole = await create_pop3_account(db, settings, dovecot, mailbox_user, tenant=tenant)

    event = await _sync(db, settings, cut)
    # Batches of 100, a part stops at the batch that reaches 250: 300 + 300 + 100.
    assert _parts(event) == 3
    assert event.result == {
        "status": "success",
        "folders": 1,
        "new": 700,
        "updated": 0,
        "deleted": 0,
    }
    assert event.progress is not None and event.progress["current"] == 700

    started = time.monotonic()
    uncut = await run_pop3_sync(db, settings, tenant_id=tenant.id, account_id=whole.id)
    print(f"the same POP3 sync uncut: {1000 * (time.monotonic() - started):.0f} ms")
    assert (uncut.cut, uncut.new) == (False, 700)
    parted, alone = await _stored(db, cut.id), await _stored(db, whole.id)
    assert len(alone) == 700 and parted == alone
    async with db.transaction() as s:
        stamped = (await s.get(Account, cut.id)).last_sync_at  # type: ignore[union-attr]
    assert stamped is not None  # the last part stamps the account as synced

    again = await _sync(db, settings, cut)  # nothing new: one part, nothing fetched
    assert _parts(again) == 1
    assert again.result == {"status": "success", "folders": 1, "new": 0, "updated": 0, "deleted": 0}


async def test_a_nylas_sync_in_parts_ends_like_an_uncut_one(
    db: Any, settings: Any, fake_nylas: Any
) -> None:
    from services.nylas.gateway import NylasGateway
    from services.nylas.sync import sync_nylas_account

    tenant = await create_tenant(db)
    cut = await create_nylas_account(db, tenant=tenant)
    whole = await create_nylas_account(db, tenant=tenant)
    now = int(time.time())
    for account in (cut, whole):
        for i in range(900):
            fake_nylas.put_message(
                account.grant_id,
                make_message(account.grant_id, f"m{i:03d}", subject=f"Message {i}", date=now - i),
            )

    event = await _sync(db, settings, cut, full=True)
    # Pages of 200, a part stops at the page that reaches 250: 400 + 400 + 100.
    assert _parts(event) == 3

    gateway = NylasGateway(
        api_key=settings.nylas_api_key.get_secret_value(), api_uri=settings.nylas_api_uri, timeout=5
    )
    async with db.transaction() as s:
        account = await s.get(Account, whole.id)
        assert account is not None
    started = time.monotonic()
    uncut = await sync_nylas_account(db, account=account, nylas=gateway, full=True)
    print(f"the same Nylas sync uncut: {1000 * (time.monotonic() - started):.0f} ms")
    assert uncut["created"] == 900 and uncut["pages"] == 5
    assert event.result == uncut  # the same counts, summed over the parts
    assert {(p, s) for p, _, s, _ in await _stored(db, cut.id)} == {
        (p, s) for p, _, s, _ in await _stored(db, whole.id)
    }
    async with db.transaction() as s:
        cursor = (await s.get(Account, cut.id)).sync_cursor  # type: ignore[union-attr]
    # Only the last part moves the cursor, and to when the first part started listing.
    first = event.history[0]
    began, ended = (
        datetime.fromisoformat(first[k]).timestamp() for k in ("started_at", "finished_at")
    )
    assert cursor is not None and int(began) - 1 <= int(cursor) <= ended, (cursor, first)


async def test_a_mass_delete_in_parts_deletes_every_message_once(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.imap.sync import run_sync

    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-2", 600)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    tenant = SimpleNamespace(id=account.tenant_id)
    await run_sync(db, settings, tenant_id=tenant.id, account_id=account.id)
    async with db.transaction() as s:
        doomed = [
            str(i)
            for i in (
                await s.execute(sa.select(Message.id).where(Message.account_id == account.id))
            ).scalars()
        ]
    assert len(doomed) == 600
    ids = _ids(account)
    event_id = await _queue(
        db,
        settings,
        task_name="postroom.mail.delete",
        # A repeated id is one message: it is deleted and counted once.
        kwargs={
            "message_ids": [*doomed, doomed[0]],
            "tenant_id": ids["tenant_id"],
            "user_id": ids["user_id"],
            "permanent": True,
        },
        tenant_id=account.tenant_id,
    )
    event = await wait_for(lambda: _finished(db, event_id), timeout=120, message="the delete")
    # Chunks of 250 ids, one chunk a part: 250 + 250 + 100.
    assert _parts(event) == 3
    assert event.result == {"status": "success", "deleted_count": 600}  # what an uncut one says
    assert event.progress is not None and event.progress["current"] == 600

    assert await _stored(db, account.id) == set()
    conn = dovecot.client(mailbox_user)
    conn.select("INBOX", readonly=True)
    _, data = conn.uid("SEARCH", "ALL")
    conn.logout()
    assert data[0].split() == []
