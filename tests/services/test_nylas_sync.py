"""Nylas sync, reconcile and send through the real SDK against the fake Nylas server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Message, OutboundMessage
from database.repositories.events import rows as events_repo
from services.errors import ProviderTemporaryError
from services.nylas.gateway import NylasGateway
from services.nylas.sync import OVERLAP_S, reconcile, sync_nylas_account
from services.outbound.send import SendRequest, send_message
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.smtp_fixtures import create_send_event


@pytest.fixture
def gateway(settings: Any) -> NylasGateway:
    return NylasGateway(
        api_key=settings.nylas_api_key.get_secret_value(), api_uri=settings.nylas_api_uri, timeout=5
    )


async def _rows(db, account: Account) -> list[Message]:
    async with db.sessionmaker() as s:
        stmt = sa.select(Message).where(Message.account_id == account.id)
        return list((await s.execute(stmt)).scalars())


async def _account(db, account_id: uuid.UUID) -> Account:
    async with db.sessionmaker() as s:
        return await s.get(Account, account_id)


async def _sync(db, account: Account, gateway: NylasGateway, *, full: bool, progress=None):
    return await sync_nylas_account(
        db, account=account, nylas=gateway, full=full, progress=progress
    )


async def test_full_sync_pages_through_every_message(db, fake_nylas, gateway) -> None:
    account = await create_nylas_account(db)
    now = int(time.time())
    for i in range(450):
        fake_nylas.put_message(
            account.grant_id,
            make_message(account.grant_id, f"m{i:03d}", subject=f"Message {i}", date=now - i * 60),
        )
    seen: list[tuple[int, int]] = []

    async def progress(current: int, total: int) -> None:
        seen.append((current, total))

    result = await _sync(db, account, gateway, full=True, progress=progress)
    assert result["fetched"] == 450 and result["created"] == 450 and result["pages"] == 3
    rows = await _rows(db, account)
    assert len(rows) == 450 and {r.subject for r in rows} >= {"Message 0", "Message 449"}
    listed = fake_nylas.requests_to(r"/messages$")
    assert [r.query.get("page_token") for r in listed] == [None, ["200"], ["400"]]
    assert all(r.query["limit"] == ["200"] for r in listed)
    assert "received_after" not in listed[0].query
    assert seen[-1] == (450, 450)
    assert (await _account(db, account.id)).sync_cursor is not None


async def test_incremental_sync_asks_only_since_the_cursor(db, fake_nylas, gateway) -> None:
    account = await create_nylas_account(db)
    now = int(time.time())
    fake_nylas.put_message(
        account.grant_id, make_message(account.grant_id, "old", date=now - 10 * 86400)
    )
    await _sync(db, account, gateway, full=True)
    fake_nylas.put_message(account.grant_id, make_message(account.grant_id, "new", date=now))
    before = len(fake_nylas.requests_to(r"/messages$"))

    account = await _account(db, account.id)
    result = await _sync(db, account, gateway, full=False)
    [listed] = fake_nylas.requests_to(r"/messages$")[before:]
    assert listed.query["received_after"] == [str(int(account.sync_cursor) - OVERLAP_S)]
    assert result["fetched"] == 1 and result["created"] == 1
    assert {r.provider_id for r in await _rows(db, account)} == {"old", "new"}


async def test_reconcile_backfills_a_message_no_webhook_announced(
    empty_database, db, fake_nylas, gateway
) -> None:
    # Reconcile walks every tenant's Nylas accounts: this test's must be the only ones.
    account = await create_nylas_account(db)
    other = await create_nylas_account(db, status="reauth_required")
    await _sync(db, account, gateway, full=True)
    now = int(time.time())
    # Arrived while our webhook endpoint was failing: Nylas will never tell us about it.
    fake_nylas.put_message(
        account.grant_id,
        make_message(account.grant_id, "missed", date=now, subject="Missed by the webhook"),
    )
    # Deleted here already: reconcile must not bring it back.
    fake_nylas.put_message(account.grant_id, make_message(account.grant_id, "gone", date=now))
    from database.repositories.messages import rows as messages_repo

    async with db.transaction() as s:
        await messages_repo.mark_deleted(
            s,
            tenant_id=account.tenant_id,
            account_id=account.id,
            provider_id="gone",
            provider_version=None,
        )
    fake_nylas.put_message(other.grant_id, make_message(other.grant_id, "not-ours", date=now))

    first = await reconcile(db, nylas=gateway)
    assert first["accounts"] == 1 and first["created"] == 1 and first["failed"] == 0
    rows = {r.provider_id: r for r in await _rows(db, account)}
    assert rows["missed"].subject == "Missed by the webhook" and rows["missed"].deleted_at is None
    assert rows["gone"].deleted_at is not None
    assert await _rows(db, other) == []
    again = await reconcile(db, nylas=gateway)
    assert again["created"] == 0
    assert len(await _rows(db, account)) == 2


async def test_reconcile_goes_on_when_one_account_fails(
    empty_database, db, fake_nylas, gateway
) -> None:
    # Reconcile walks every tenant's Nylas accounts: this test's must be the only ones.
    broken = await create_nylas_account(db)
    fine = await create_nylas_account(db)
    fake_nylas.put_message(fine.grant_id, make_message(fine.grant_id, "x"))
    fake_nylas.fail(rf"/grants/{broken.grant_id}/messages", 503, times=5)
    result = await reconcile(db, nylas=gateway)
    assert result["failed"] == 1 and result["accounts"] == 1 and result["created"] == 1


async def _send(db, settings, account, gateway, event_id) -> Any:
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    return await send_message(
        db,
        settings=settings,
        account=account,
        event=event,
        nylas=gateway,
        request=SendRequest(
            to=[{"email": "bob@example.org", "name": "Bob"}],
            bcc=["hidden@example.net"],
            subject="Via Nylas",
            body_html="<p>Hi</p>",
        ),
    )


async def test_nylas_send_carries_the_idempotency_key_and_sends_once(
    db, settings, fake_nylas, gateway
) -> None:
    account = await create_nylas_account(db)
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    fake_nylas.fail(r"/messages/send$", 503, times=1)
    with pytest.raises(ProviderTemporaryError):
        await _send(db, settings, account, gateway, event_id)
    outcome = await _send(db, settings, account, gateway, event_id)
    again = await _send(db, settings, account, gateway, event_id)

    sends = fake_nylas.requests_to(r"/messages/send$")
    # The 503 and the retry with the same key; the third run found `sent` and only looked it up.
    assert len(sends) == 2
    assert {r.headers.get("Idempotency-Key") for r in sends} == {str(event_id)}
    assert sends[-1].body["bcc"] == [{"email": "hidden@example.net"}]
    assert sends[-1].body["subject"] == "Via Nylas"
    sent_box = [m for m in fake_nylas.state.messages[account.grant_id].values()]
    assert len(sent_box) == 1, "the provider kept one message for the repeated key"
    assert outcome.result["status"] == "success"
    assert outcome.result["recipients_sent"] == 2
    assert again.result["message_id"] == outcome.result["message_id"]
    [row] = await _rows(db, account)
    assert row.provider_id == sent_box[0]["id"] and row.subject == "Via Nylas"
    async with db.sessionmaker() as s:
        mine = sa.select(OutboundMessage).where(OutboundMessage.account_id == account.id)
        [ledger] = (await s.execute(mine)).scalars().all()
    assert ledger.status == "sent"
    assert ledger.recipients == ["bob@example.org", "hidden@example.net"]
