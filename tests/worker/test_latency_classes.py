"""Latency classes, bounded sync parts and IMAP connection slots, through `make worker`'s layout.

The session worker is that layout (tests.peers.Workers: a short and a bulk Celery worker) with
POSTROOM_BULK_PART_MESSAGES=250 (tests/conftest.py), so a sync of 2,000 messages is eight parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Event, EventSource, EventStatus, Folder, Message
from database.repositories.events import rows as events_repo
from tests.api.keys import make_caller
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, wait_for
from tests.imap_fixtures import Dovecot, add_user
from tests.imap_support import append_corpus, create_imap_account

pytestmark = pytest.mark.usefixtures("worker")


async def queue_sync(db: Any, settings: Any, account: Any) -> uuid.UUID:
    """What the API does for POST /v1/accounts/{id}/sync: an event, then a publish."""
    from worker.app import make_celery
    from worker.dispatch import publish

    kwargs = {
        "account_id": str(account.id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
        "folder": None,
        "full": False,
    }
    event_id = uuid.uuid4()
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source=EventSource.api,
            type="sync",
            external_id=None,
            task_name="postroom.mail.sync_account",
            task_id=str(event_id),
            payload={"kwargs": kwargs},
            stale_after_s=60,
            task_kwargs=kwargs,
            tenant_id=account.tenant_id,
            account_id=account.id,
        )
    assert publish(
        make_celery(settings, publisher_only=True),
        task_name="postroom.mail.sync_account",
        event_id=event_id,
        task_id=str(event_id),
        kwargs=kwargs,
    )
    return event_id


async def event_row(db: Any, event_id: uuid.UUID) -> Event:
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    assert event is not None
    return event


async def stored_keys(db: Any, account_id: uuid.UUID) -> set[tuple[Any, ...]]:
    """What a sync leaves: (folder, uid, Message-ID, subject, unread, flags) per live message."""
    async with db.transaction() as s:
        rows = await s.execute(
            sa.select(
                Folder.name,
                Message.imap_uid,
                Message.message_id_header,
                Message.subject,
                Message.unread,
                Message.flags,
            )
            .join(Folder, Folder.id == Message.folder_id)
            .where(Message.account_id == account_id, Message.deleted_at.is_(None))
        )
        return {(r[0], r[1], r[2], r[3], r[4], tuple(r[5] or ())) for r in rows}


async def test_a_webhook_is_stored_within_5s_while_another_tenant_runs_big_initial_syncs(
    db: Any, settings: Any, client: Any, dovecot: Dovecot, fake_nylas: Any
) -> None:
    # Tenant A: two mailboxes of 1,000 corpus messages each, both initial syncs queued, so
    # both bulk slots are busy (and before the classes, the webhook queued behind them).
    users = [add_user(dovecot), add_user(dovecot)]
    await append_corpus(dovecot, users[0], {"INBOX": ("easy-ham-1", 1000)})
    await append_corpus(dovecot, users[1], {"INBOX": ("easy-ham-2", 1000)})
    first = await create_imap_account(db, settings, dovecot, users[0])
    tenant_a = SimpleNamespace(id=first.tenant_id)
    second = await create_imap_account(db, settings, dovecot, users[1], tenant=tenant_a)
    syncs = [await queue_sync(db, settings, a) for a in (first, second)]

    async def both_running() -> bool:
        rows = [await event_row(db, e) for e in syncs]
        return all(
            r.status == EventStatus.processing and (r.progress or {}).get("current", 0) > 0
            for r in rows
        )

    await wait_for(both_running, timeout=60, interval=0.05, message="A's syncs running")

    # Tenant B: one Nylas webhook.
    account_b = await create_nylas_account(db)
    msg = make_message(account_b.grant_id, "b-1", subject="Tenant B's one message")
    started = time.monotonic()
    r = await post_webhook(client, notification("message.created", msg))
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text

    async def stored() -> bool:
        async with db.transaction() as s:
            found = await s.execute(
                sa.select(Message.id).where(
                    Message.account_id == account_b.id, Message.provider_id == "b-1"
                )
            )
            return found.first() is not None

    await wait_for(stored, timeout=30, interval=0.02, message="tenant B's message")
    waited = time.monotonic() - started
    print(f"\ntenant B's webhook stored {waited:.2f}s after its POST, beside A's two syncs")
    # A's syncs are still running: the webhook did not wait for them.
    still = [await event_row(db, e) for e in syncs]
    assert any(r.status == EventStatus.processing for r in still), [r.status for r in still]
    assert waited < 5.0, f"tenant B's webhook took {waited:.2f}s behind tenant A's syncs"

    for event_id in syncs:  # and A's syncs finish whole, in parts
        done = await wait_for(
            lambda e=event_id: _finished(db, e), timeout=120, message="A's sync to finish"
        )
        assert done.status == EventStatus.succeeded, done.last_error
        assert done.result is not None and done.result["new"] == 1000
        assert (done.progress or {}).get("parts", 1) >= 4


async def _finished(db: Any, event_id: uuid.UUID) -> Event | None:
    event = await event_row(db, event_id)
    return event if event.status in EventStatus.finished() else None


async def test_a_sync_in_parts_is_one_job_and_ends_like_an_uncut_sync(
    db: Any, settings: Any, client: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.imap.sync import run_sync

    await append_corpus(
        dovecot,
        mailbox_user,
        {"INBOX": ("easy-ham-1", 1500), "Junk": ("spam-1", 300), "Archive": ("hard-ham-1", 200)},
    )
    caller = await make_caller(db)
    tenant = SimpleNamespace(id=caller.tenant_id)
    cut = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    whole = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)

    r = await client.post(f"/v1/accounts/{cut.id}/sync", json={}, headers=caller.headers)
    assert r.status_code == 202, r.text
    job = r.json()
    event_id = uuid.UUID(job["event_id"])

    # Watch the job while it runs: the event, and what GET /v1/tasks says of it.
    seen: list[tuple[str, str, int, bool]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        event = await event_row(db, event_id)
        t = await client.get(f"/v1/tasks/{job['task_id']}", headers=caller.headers)
        assert t.status_code == 200, t.text
        progress = event.progress or {}
        seen.append(
            (
                str(event.status),
                t.json()["state"],
                int(progress.get("parts", 0)),
                bool(progress.get("continues")),
            )
        )
        if event.status in EventStatus.finished():
            break
        await asyncio.sleep(0.05)
    event = await event_row(db, event_id)
    assert event.status == EventStatus.succeeded, event.last_error

    # The job may finish between a sample's event read and its GET: the sample before the
    # last then reads `processing` and rightly gets SUCCESS (the state is read from the event).
    if len(seen) >= 2 and seen[-2][1] == "SUCCESS" and seen[-1][0] == EventStatus.succeeded:
        del seen[-2]
    # Between parts the job was STARTED (processing), never PENDING again or finished early.
    between = [s for s in seen if s[3]]
    assert between, f"no moment between parts was seen: {seen[:5]}..."
    assert {(s[0], s[1]) for s in between} == {("processing", "STARTED")}, set(between)
    assert all(s[1] in ("PENDING", "STARTED") for s in seen[:-1]), seen
    final = await client.get(f"/v1/tasks/{job['task_id']}", headers=caller.headers)
    body = final.json()
    assert body["state"] == "SUCCESS"
    # The result counts the whole sync, not its last part.
    assert body["result"]["new"] == 2000 and body["result"]["status"] == "success", body
    assert event.progress is not None and event.progress["parts"] >= 6
    assert event.progress["current"] == 2000
    outcomes = [h["outcome"] for h in event.history]
    assert outcomes.count("continued") == event.progress["parts"] - 1
    assert event.attempts == 1  # parts are not attempts

    # The same mailbox synced in one uncut run ends with the same messages.
    await run_sync(db, settings, tenant_id=tenant.id, account_id=whole.id)
    parted, uncut = await stored_keys(db, cut.id), await stored_keys(db, whole.id)
    assert len(uncut) == 2000
    assert parted == uncut
    async with db.transaction() as s:
        states = await s.execute(
            sa.select(Folder.name, Folder.uidnext, Folder.highest_modseq).where(
                Folder.account_id.in_([cut.id, whole.id])
            )
        )
        per_account: dict[str, set[tuple[Any, ...]]] = {}
        for name, uidnext, modseq in states:
            per_account.setdefault(name, set()).add((uidnext, modseq))
    # Each folder's stored state is the same after the parts as after the uncut run.
    assert all(len(v) == 1 for v in per_account.values()), per_account


def connections(dovecot: Dovecot, user: str) -> int:
    """IMAP connections Dovecot has open for the user right now (`doveadm who -1`)."""
    try:
        out = dovecot.doveadm("who", "-1", user)
    except Exception:
        return 0
    return sum(1 for line in out.splitlines() if line.split()[:1] == [user])


async def test_two_syncs_and_a_delete_of_one_account_never_open_more_than_n_connections(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from worker.app import make_celery
    from worker.dispatch import publish

    assert settings.imap_max_connections == 2
    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-2", 1000)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    # The budget is per account: two syncs of this one account, then a delete.
    first = await queue_sync(db, settings, account)
    await wait_for(lambda: _processing(db, first), timeout=60, interval=0.02, message="first sync")
    second = await queue_sync(db, settings, account)

    samples: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            samples.append(await asyncio.to_thread(connections, dovecot, mailbox_user))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        # The delete needs stored messages: wait for the first part's batch, then delete them.
        async def some_ids() -> list[str]:
            async with db.transaction() as s:
                rows = await s.execute(
                    sa.select(Message.id).where(Message.account_id == account.id).limit(5)
                )
                return [str(i) for i in rows.scalars()]

        ids = await wait_for(some_ids, timeout=60, message="messages to delete")
        kwargs = {
            "message_ids": ids,
            "tenant_id": str(account.tenant_id),
            "user_id": str(account.user_id),
            "permanent": True,
        }
        delete_id = uuid.uuid4()
        async with db.transaction() as s:
            await events_repo.insert_once(
                s,
                event_id=delete_id,
                source=EventSource.api,
                type="delete",
                external_id=None,
                task_name="postroom.mail.delete",
                task_id=str(delete_id),
                payload={"kwargs": kwargs},
                stale_after_s=60,
                task_kwargs=kwargs,
                tenant_id=account.tenant_id,
            )
        assert publish(
            make_celery(settings, publisher_only=True),
            task_name="postroom.mail.delete",
            event_id=delete_id,
            task_id=str(delete_id),
            kwargs=kwargs,
        )
        for event_id in (first, second, delete_id):
            done = await wait_for(
                lambda e=event_id: _finished(db, e), timeout=120, message="the account's jobs"
            )
            assert done.status == EventStatus.succeeded, done.last_error
    finally:
        stop.set()
        await watcher
    assert samples and max(samples) <= settings.imap_max_connections, max(samples)
    # The budget was reached (three jobs wanted connections at once), so the check had
    # something to stop.
    assert max(samples) == settings.imap_max_connections, samples


async def _processing(db: Any, event_id: uuid.UUID) -> bool:
    return (await event_row(db, event_id)).status == EventStatus.processing


async def test_a_slot_is_refused_at_once_and_is_freed_on_exit(settings: Any) -> None:
    from services.imap.slots import AccountBusy, holders, imap_slot

    quick = settings.model_copy(update={"imap_max_connections": 2})
    account = uuid.uuid4()
    async with imap_slot(quick, account), imap_slot(quick, account):
        assert len(await holders(quick, account)) == 2
        started = time.monotonic()
        with pytest.raises(AccountBusy):
            async with imap_slot(quick, account):
                pass
        assert time.monotonic() - started < 0.5  # no waiting in the task
    assert await holders(quick, account) == []
    async with imap_slot(quick, account):  # free again
        assert len(await holders(quick, account)) == 1


async def test_a_task_that_waited_in_vain_for_a_connection_retries_without_spending_attempts(
    db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from services.imap.slots import AccountBusy, imap_slot

    await append_corpus(dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 5)})
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    sync_id = await queue_sync(db, settings, account)  # rows to delete
    await wait_for(lambda: _count(db, account.id), timeout=60, message="the first sync")
    await wait_for(lambda: _finished(db, sync_id), timeout=60, message="the first sync's end")
    async with db.transaction() as s:
        ids = [
            str(i)
            for i in (
                await s.execute(sa.select(Message.id).where(Message.account_id == account.id))
            ).scalars()
        ]
    # Something else holds both of the account's connections: the task is refused a slot at
    # once and re-queued with a countdown until they are free.
    # A slot is refused at once while taken, so take both as soon as whatever the first sync
    # started (its follow-up work) has let them go.
    held = contextlib.AsyncExitStack()

    async def take_one() -> bool:
        try:
            await held.enter_async_context(imap_slot(settings, account.id))
        except AccountBusy:
            return False
        return True

    async with held:
        for _ in range(2):
            await wait_for(take_one, timeout=30, message="a free connection slot")
        delete_id = await queue_delete(db, settings, account, ids)

        async def waited_and_retries() -> bool:
            event = await event_row(db, delete_id)
            return any("AccountBusy" in (h.get("error") or "") for h in event.history)

        await wait_for(waited_and_retries, timeout=60, message="the delete to find them taken")
    done = await wait_for(
        lambda: _finished(db, delete_id), timeout=60, message="the delete to finish"
    )
    assert done.status == EventStatus.succeeded, done.last_error
    assert done.result == {"status": "success", "deleted_count": 5}
    busy = [h for h in done.history if "AccountBusy" in (h.get("error") or "")]
    assert busy and all(h["outcome"] == "retrying" for h in busy), done.history
    assert done.attempts == 1  # waiting was not an attempt


async def _count(db: Any, account_id: uuid.UUID) -> bool:
    async with db.transaction() as s:
        n = await s.scalar(
            sa.select(sa.func.count()).select_from(Message).where(Message.account_id == account_id)
        )
    return n == 5


async def queue_delete(db: Any, settings: Any, account: Any, ids: list[str]) -> uuid.UUID:
    from worker.app import make_celery
    from worker.dispatch import publish

    kwargs = {
        "message_ids": ids,
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
        "permanent": True,
    }
    delete_id = uuid.uuid4()
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=delete_id,
            source=EventSource.api,
            type="delete",
            external_id=None,
            task_name="postroom.mail.delete",
            task_id=str(delete_id),
            payload={"kwargs": kwargs},
            stale_after_s=60,
            task_kwargs=kwargs,
            tenant_id=account.tenant_id,
        )
    assert publish(
        make_celery(settings, publisher_only=True),
        task_name="postroom.mail.delete",
        event_id=delete_id,
        task_id=str(delete_id),
        kwargs=kwargs,
    )
    return delete_id
