"""Replays act only on what the caller still owns (issue 20, item 7).

Tenant A had a Nylas account on grant G; a notification of G failed and became A's dead
letter. A deleted the account; tenant B connected G. Replaying A's old event (its dead letter,
or the event itself) must not run against B's mailbox: the API refuses the replay (409), and
processing refuses an event whose stored tenant is not the grant's owner today."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from database.models import Account, DeadLetter, Event, EventStatus, Message
from database.repositories.events import dead_letters as dl_repo
from database.repositories.events import rows as events_repo
from services.nylas.notifications import fetch_truncated, process_notification
from tests.api.test_dead_letters import auth_for
from tests.factories import create_nylas_account, create_tenant


def _notification(grant: str, message_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": "message.created",
        "id": f"n-{uuid.uuid4().hex}",
        "time": 1_700_000_000,
        "data": {
            "application_id": "app",
            "grant_id": grant,
            "object": {
                "id": message_id,
                "grant_id": grant,
                "object": "message",
                "subject": "Secret plans of tenant A",
                "from": [{"email": "boss@a.example"}],
                "to": [{"email": "a@a.example"}],
                "date": 1_700_000_000,
                "body": "<p>for A only</p>",
                "folders": ["INBOX"],
            },
        },
    }


async def _dead_webhook_event(db: Any, account: Account, status: EventStatus) -> tuple[Any, Any]:
    """A's notification of the grant, processed for A and failed (dead letter) or finished."""
    event_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source="nylas",
            type="message.created",
            external_id=f"n-{event_id}",
            task_name="postroom.events.process",
            task_id=task_id,
            payload=_notification(account.grant_id or "", f"m-{uuid.uuid4().hex[:8]}"),
            stale_after_s=30,
            task_kwargs={},
            tenant_id=account.tenant_id,
            account_id=account.id,
        )
        event = await events_repo.claim(s, event_id=event_id, task_id=task_id, lease_s=60)
        assert event is not None
        dl_id = await dl_repo.record(
            s,
            tenant_id=account.tenant_id,
            event_id=event_id,
            task_name="postroom.events.process",
            task_id=task_id,
            args=[],
            kwargs={"event_id": str(event_id)},
            exception_type="ProviderTemporaryError",
            exception_message="Nylas did not answer",
            traceback="Traceback ...",
            attempts=5,
        )
        await events_repo.finish(s, event=event, task_id=task_id, status=status, error="x")
    return dl_id, event_id


async def _move_grant(db: Any, account: Account) -> Account:
    """A deletes its account; B connects the same grant."""
    async with db.transaction() as s:
        await s.execute(
            sa.update(Account).where(Account.id == account.id).values(deleted_at=datetime.now(UTC))
        )
    return await create_nylas_account(db, grant_id=account.grant_id, tenant=await create_tenant(db))


async def test_a_replay_of_a_moved_grants_event_is_refused(
    client: httpx.AsyncClient, db: Any
) -> None:
    tenant_a = await create_tenant(db)
    old = await create_nylas_account(db, tenant=tenant_a)
    dl_id, event_id = await _dead_webhook_event(db, old, EventStatus.dead)
    _, done_id = await _dead_webhook_event(db, old, EventStatus.succeeded)
    headers = await auth_for(db, tenant_a)
    await _move_grant(db, old)

    r = await client.post(f"/v1/dead-letters/{dl_id}/replay", headers=headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict"
    r = await client.post(f"/v1/events/{done_id}/replay", headers=headers)
    assert r.status_code == 409, r.text
    async with db.transaction() as s:
        event = await s.get(Event, event_id)
        letter = await s.get(DeadLetter, dl_id)
        assert event is not None and event.status == EventStatus.dead
        assert letter is not None and letter.replayed_at is None


async def test_a_replay_of_an_account_that_is_still_the_callers_goes_ahead(
    client: httpx.AsyncClient, db: Any
) -> None:
    tenant_a = await create_tenant(db)
    account = await create_nylas_account(db, tenant=tenant_a)
    dl_id, _ = await _dead_webhook_event(db, account, EventStatus.dead)
    headers = await auth_for(db, tenant_a)
    r = await client.post(f"/v1/dead-letters/{dl_id}/replay", headers=headers)
    assert r.status_code == 202, r.text


async def test_processing_refuses_an_event_whose_grant_moved_to_another_tenant(db: Any) -> None:
    tenant_a = await create_tenant(db)
    old = await create_nylas_account(db, tenant=tenant_a)
    _, event_id = await _dead_webhook_event(db, old, EventStatus.dead)
    new = await _move_grant(db, old)

    class NoNylas:
        async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]:
            raise AssertionError("nothing is fetched for the new owner")

    async with db.transaction() as s:
        event = await s.get(Event, event_id)
        assert event is not None
        assert await fetch_truncated(db, event=event, nylas=NoNylas()) is None
        outcome = await process_notification(s, event=event, nylas_configured=True)
        assert outcome.status == "ignored", outcome
        assert event.tenant_id == tenant_a.id  # still A's event (and A's dead letter)
    async with db.transaction() as s:
        stored = await s.execute(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.tenant_id == new.tenant_id)
        )
        assert stored.scalar() == 0
