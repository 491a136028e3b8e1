"""Mail tasks end to end through the real Celery worker, and the periodic sync scheduler."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from database.models import Account, Event, EventSource, EventStatus, Message
from database.repositories.events import rows as events_repo
from tests.helpers import wait_for
from tests.imap_fixtures import Dovecot, add_user
from tests.imap_support import append_corpus, create_imap_account


async def _queue(
    db: Any,
    settings: Any,
    *,
    task_name: str,
    kwargs: dict[str, Any],
    tenant_id: uuid.UUID,
    account_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """What the API does: insert the event, commit, publish by task name."""
    from worker.app import make_celery
    from worker.dispatch import publish

    event_id = uuid.uuid4()
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source=EventSource.api,
            type=task_name,
            external_id=None,
            task_name=task_name,
            task_id=str(event_id),
            payload={"kwargs": kwargs},
            stale_after_s=60,
            task_kwargs=kwargs,
            tenant_id=tenant_id,
            account_id=account_id,
        )
    assert publish(
        make_celery(settings, publisher_only=True),
        task_name=task_name,
        event_id=event_id,
        task_id=str(event_id),
        kwargs=kwargs,
    )
    return event_id


async def _finished(db: Any, event_id: uuid.UUID) -> Event | None:
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    return event if event is not None and event.status in EventStatus.finished() else None


async def test_sync_then_delete_through_the_worker(
    db: Any, settings: Any, worker: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    await append_corpus(
        dovecot, mailbox_user, {"INBOX": ("easy-ham-1", 40), "Junk": ("spam-1", 10)}
    )
    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    ids = {
        "account_id": str(account.id),
        "tenant_id": str(account.tenant_id),
        "user_id": str(account.user_id),
    }

    event_id = await _queue(
        db,
        settings,
        task_name="postroom.mail.sync_account",
        kwargs={**ids, "folder": None, "full": False},
        tenant_id=account.tenant_id,
        account_id=account.id,
    )
    event = await wait_for(lambda: _finished(db, event_id), timeout=60, message="sync event")

    assert event.status == EventStatus.succeeded, event.last_error
    assert event.result == {
        "status": "success",
        "folders": 6,
        "new": 50,
        "updated": 0,
        "deleted": 0,
    }
    assert event.progress == {"current": 50, "total": 50}
    async with db.transaction() as s:
        rows = list(
            (
                await s.execute(
                    sa.select(Message)
                    .where(Message.account_id == account.id)
                    .order_by(Message.imap_uid)
                )
            ).scalars()
        )
        last_sync = (await s.get(Account, account.id)).last_sync_at  # type: ignore[union-attr]
    assert len(rows) == 50 and last_sync is not None

    doomed = [str(r.id) for r in rows if r.labels == ["INBOX"]][:3]
    event_id = await _queue(
        db,
        settings,
        task_name="postroom.mail.delete",
        kwargs={
            "message_ids": doomed,
            "tenant_id": ids["tenant_id"],
            "user_id": ids["user_id"],
            "permanent": True,
        },
        tenant_id=account.tenant_id,
    )
    event = await wait_for(lambda: _finished(db, event_id), timeout=60, message="delete event")

    assert event.status == EventStatus.succeeded, event.last_error
    assert event.result == {"status": "success", "deleted_count": 3}
    conn = dovecot.client(mailbox_user)
    conn.select("INBOX", readonly=True)
    _, data = conn.uid("SEARCH", "ALL")
    conn.logout()
    assert len(data[0].split()) == 37


async def test_sync_of_another_tenants_account_is_dead_without_retries(
    db: Any, settings: Any, worker: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    from tests.factories import create_tenant

    account = await create_imap_account(db, settings, dovecot, mailbox_user)
    other = await create_tenant(db)
    kwargs = {
        "account_id": str(account.id),
        "tenant_id": str(other.id),
        "user_id": str(account.user_id),
        "folder": None,
        "full": False,
    }
    event_id = await _queue(
        db, settings, task_name="postroom.mail.sync_account", kwargs=kwargs, tenant_id=other.id
    )
    event = await wait_for(lambda: _finished(db, event_id), timeout=60, message="dead event")

    assert event.status == EventStatus.dead and event.attempts == 1
    stored = sa.select(sa.func.count()).select_from(Message).where(Message.account_id == account.id)
    async with db.transaction() as s:
        count = (await s.execute(stored)).scalar_one()
    assert count == 0


async def test_periodic_sync_enqueues_due_accounts_once(
    empty_database: None, db: Any, settings: Any, dovecot: Dovecot, mailbox_user: str
) -> None:
    # The scheduler's subject is every account of every tenant: it needs the only ones.
    from services.events.schedule import enqueue_due_syncs

    due = await create_imap_account(db, settings, dovecot, mailbox_user)
    fresh = await create_imap_account(db, settings, dovecot, add_user(dovecot))
    async with db.transaction() as s:
        await s.execute(
            sa.update(Account)
            .where(Account.id == fresh.id)
            .values(  # type: ignore[arg-type]
                last_sync_at=sa.func.now()
            )
        )
    published: list[dict[str, Any]] = []

    def publish(**kw: Any) -> bool:
        published.append(kw)
        return True

    first = await enqueue_due_syncs(db, publish=publish, stale_after_s=60)
    second = await enqueue_due_syncs(db, publish=publish, stale_after_s=60)

    assert (first.queued, second.queued) == (1, 0)  # the first sync is still unfinished
    assert [p["kwargs"]["account_id"] for p in published] == [str(due.id)]
    async with db.transaction() as s:
        events = list((await s.execute(sa.select(Event))).scalars())
    assert len(events) == 1 and events[0].source == EventSource.schedule
    assert events[0].task_name == "postroom.mail.sync_account"
