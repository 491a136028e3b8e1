"""Workflow chains through a real Celery worker: classify -> apply_rules after a webhook,
a step that fails for good, and a replay that resumes from that step."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, DeadLetter, Event, Folder, Message, Rule, Tenant
from services.events import dead_letters
from tests.api.keys import make_caller
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, wait_for
from tests.imap_support import append_corpus, create_imap_account
from worker import dispatch
from worker.app import make_celery

pytestmark = pytest.mark.usefixtures("worker")

PHISH = dict(
    subject="Urgent: your account will be suspended",
    body="<p>Unusual sign-in activity. Verify your account and enter your password at "
    '<a href="http://203.0.113.9/login">www.paypal.com</a> within 24 hours.</p>',
    **{"from": [{"name": "PayPal Security", "email": "security@paypa1-alerts.com"}]},
)


async def chain_event(db: Any, account: Account, *, states: tuple[str, ...]) -> Event:
    async def check() -> Event | None:
        async with db.sessionmaker() as s:
            ev = (
                await s.execute(
                    sa.select(Event).where(
                        Event.account_id == account.id,
                        Event.type == "workflow.classify-message",
                    )
                )
            ).scalar_one_or_none()
            return ev if ev is not None and ev.status in states else None

    return await wait_for(check, timeout=30, message=f"the classify chain to reach {states}")


async def setup(db: Any, fake_nylas: Any, *, junk: bool) -> tuple[Account, dict[str, Any]]:
    account = await create_nylas_account(db)
    async with db.transaction() as s:
        if junk:
            s.add(
                Folder(
                    tenant_id=account.tenant_id,
                    account_id=account.id,
                    name="Junk",
                    provider_id="JUNK",
                    role="junk",
                )
            )
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="spam to junk",
                condition={"is_spam": True},
                action={"type": "move", "folder_role": "junk"},
            )
        )
    msg = make_message(account.grant_id, f"m-{uuid.uuid4().hex[:6]}", **PHISH)
    fake_nylas.put_message(account.grant_id, msg)
    return account, msg


async def stored(db: Any, account: Account) -> Message:
    async with db.sessionmaker() as s:
        found = await s.execute(sa.select(Message).where(Message.account_id == account.id))
        return found.scalar_one()


async def test_new_message_from_a_webhook_is_classified_then_moved_by_a_rule(
    client: Any, db: Any, fake_nylas: Any
) -> None:
    account, msg = await setup(db, fake_nylas, junk=True)
    r = await post_webhook(client, notification("message.created", msg))
    assert r.status_code == 200
    event = await chain_event(db, account, states=("succeeded", "dead"))
    assert event.status == "succeeded", event.last_error
    assert [(s["name"], s["state"], s["attempts"]) for s in event.steps] == [
        ("classify", "succeeded", 1),
        ("apply_rules", "succeeded", 1),
    ]
    row = await stored(db, account)
    assert row.is_spam is True and row.spam_score is not None and row.spam_score > 0.5
    assert {"link_to_ip_address", "credential_request_wording"} <= set(row.spam_indicators or [])
    async with db.sessionmaker() as s:
        junk = (
            await s.execute(
                sa.select(Folder).where(Folder.role == "junk", Folder.account_id == account.id)
            )
        ).scalar_one()
    assert row.folder_id == junk.id
    puts = [
        r
        for r in fake_nylas.requests_to(f"/v3/grants/{account.grant_id}/messages/{msg['id']}")
        if r.method == "PUT"
    ]
    assert len(puts) == 1 and puts[0].body == {"folders": ["JUNK"]}
    assert fake_nylas.state.messages[account.grant_id][msg["id"]]["folders"] == ["JUNK"]


async def test_a_step_failing_for_good_dead_letters_it_and_replay_resumes_from_that_step(
    client: Any, db: Any, fake_nylas: Any, settings: Any
) -> None:
    account, msg = await setup(db, fake_nylas, junk=False)
    r = await post_webhook(client, notification("message.created", msg))
    assert r.status_code == 200
    event = await chain_event(db, account, states=("dead", "succeeded"))
    assert event.status == "dead"
    assert [(s["name"], s["state"]) for s in event.steps] == [
        ("classify", "succeeded"),
        ("apply_rules", "dead"),
    ]
    classify_task = event.steps[0]["task_id"]
    async with db.sessionmaker() as s:
        [letter] = (
            (await s.execute(sa.select(DeadLetter).where(DeadLetter.event_id == event.id)))
            .scalars()
            .all()
        )
    assert letter.step == "apply_rules" and letter.task_name == "postroom.mail.apply_rules"
    assert letter.exception_type == "ValidationFailed" and "'junk'" in letter.exception_message
    assert (await stored(db, account)).is_spam is True

    # Fix the cause, then replay: only apply_rules runs again.
    async with db.transaction() as s:
        s.add(
            Folder(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="Junk",
                provider_id="JUNK",
                role="junk",
            )
        )
    publisher = make_celery(settings, publisher_only=True)
    job = await dead_letters.replay(
        db, letter.id, tenant_id=account.tenant_id, publish=partial(dispatch.publish, publisher)
    )
    assert job.task_name == "postroom.mail.apply_rules"
    event = await chain_event(db, account, states=("succeeded",))
    assert [(s["name"], s["state"], s["attempts"]) for s in event.steps] == [
        ("classify", "succeeded", 1),
        ("apply_rules", "succeeded", 2),
    ]
    assert event.steps[0]["task_id"] == classify_task
    assert fake_nylas.state.messages[account.grant_id][msg["id"]]["folders"] == ["JUNK"]


# -- workflows started through the API, on a real IMAP mailbox ------------------------------


PHISH_RAW = (
    b"From: PayPal Security <security@paypa1-alerts.com>\r\nTo: you@example.com\r\n"
    b"Subject: Urgent: your account will be suspended\r\nMessage-ID: <p1@paypa1-alerts.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p>Verify your account and enter your password at <a href="http://203.0.113.9/x">'
    b"www.paypal.com</a> within 24 hours.</p>\r\n"
)
HAM_RAW = (
    b"From: Alice <alice@example.org>\r\nTo: you@example.com\r\nSubject: Re: build script\r\n"
    b"Message-ID: <h1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    b"Thanks, I applied your patch to the build script; the tests pass here.\r\n"
)


async def test_triage_syncs_classifies_and_moves_spam_to_junk(
    client: Any, db: Any, settings: Any, dovecot: Any, mailbox_user: str
) -> None:
    caller = await make_caller(db)
    async with db.sessionmaker() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
    account = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    await append_corpus(dovecot, mailbox_user, {}, extra={"INBOX": [PHISH_RAW, HAM_RAW]})
    listed = await client.get("/v1/workflows", headers=caller.headers)
    assert {w["name"]: w["steps"] for w in listed.json()["data"]}["triage"] == [
        "sync",
        "classify",
        "move_spam_to_junk",
    ]

    r = await client.post(
        "/v1/workflows/triage", json={"account_id": str(account.id)}, headers=caller.headers
    )
    assert r.status_code == 202, r.text

    async def done() -> Event | None:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, uuid.UUID(r.json()["event_id"]))
            return ev if ev and ev.status in ("succeeded", "dead") else None

    event = await wait_for(done, timeout=60, message="the triage workflow to finish")
    assert event.status == "succeeded", (event.last_error, event.steps)
    assert [(s["name"], s["state"]) for s in event.steps] == [
        ("sync", "succeeded"),
        ("classify", "succeeded"),
        ("move_spam_to_junk", "succeeded"),
    ]
    assert event.result is not None and event.result["moved_to_junk"] == 1
    conn = dovecot.client(mailbox_user)
    try:
        conn.select("Junk")
        junk = conn.search(None, "ALL")[1][0].split()
        conn.select("INBOX")
        inbox = conn.search(None, "ALL")[1][0].split()
        subjects = conn.fetch(b",".join(inbox).decode(), "(BODY[HEADER.FIELDS (SUBJECT)])")[1]
    finally:
        conn.logout()
    assert len(junk) == 1 and len(inbox) == 1
    assert b"build script" in subjects[0][1]


async def test_a_transient_provider_error_retries_only_that_step(
    client: Any, db: Any, fake_nylas: Any
) -> None:
    account, msg = await setup(db, fake_nylas, junk=True)
    fake_nylas.fail(rf"/messages/{msg['id']}$", status=503, times=1, method="PUT")
    r = await post_webhook(client, notification("message.created", msg))
    assert r.status_code == 200
    event = await chain_event(db, account, states=("succeeded", "dead"))
    assert event.status == "succeeded", event.last_error
    assert [(s["name"], s["state"], s["attempts"]) for s in event.steps] == [
        ("classify", "succeeded", 1),
        ("apply_rules", "succeeded", 2),
    ]
    assert fake_nylas.state.messages[account.grant_id][msg["id"]]["folders"] == ["JUNK"]
    async with db.sessionmaker() as s:
        mine = sa.select(DeadLetter).where(DeadLetter.event_id == event.id)
        letters = (await s.execute(mine)).scalars().all()
    assert letters == []


async def test_an_update_of_a_known_message_starts_no_second_chain(
    client: Any, db: Any, fake_nylas: Any
) -> None:
    account, msg = await setup(db, fake_nylas, junk=True)
    assert (await post_webhook(client, notification("message.created", msg))).status_code == 200
    await chain_event(db, account, states=("succeeded",))
    updated = {**msg, "folders": ["INBOX"], "unread": False}
    r = await post_webhook(client, notification("message.updated", updated))

    async def processed() -> bool:
        async with db.sessionmaker() as s:
            ev = await s.get(Event, uuid.UUID(r.json()["event_id"]))
            return ev is not None and ev.status == "succeeded"

    await wait_for(processed, message="the update to be processed")
    async with db.sessionmaker() as s:
        chains = (
            (
                await s.execute(
                    sa.select(Event).where(
                        Event.tenant_id == account.tenant_id,
                        Event.type == "workflow.classify-message",
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(chains) == 1


async def test_a_plain_sync_classifies_new_mail_and_applies_the_accounts_rules(
    client: Any, db: Any, settings: Any, dovecot: Any, mailbox_user: str
) -> None:
    caller = await make_caller(db)
    async with db.sessionmaker() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
    account = await create_imap_account(db, settings, dovecot, mailbox_user, tenant=tenant)
    await append_corpus(dovecot, mailbox_user, {}, extra={"INBOX": [PHISH_RAW, HAM_RAW]})
    rule = {
        "name": "spam to junk",
        "condition": {"is_spam": True},
        "action": {"type": "move", "folder_role": "junk"},
    }
    r = await client.post(f"/v1/accounts/{account.id}/rules", json=rule, headers=caller.headers)
    assert r.status_code == 201, r.text
    r = await client.post(f"/v1/accounts/{account.id}/sync", json={}, headers=caller.headers)
    assert r.status_code == 202, r.text

    async def chain() -> Event | None:
        async with db.sessionmaker() as s:
            ev = (
                await s.execute(
                    sa.select(Event).where(
                        Event.type == "workflow.classify-new", Event.tenant_id == tenant.id
                    )
                )
            ).scalar_one_or_none()
            return ev if ev is not None and ev.status in ("succeeded", "dead") else None

    event = await wait_for(chain, timeout=60, message="the classify-new chain after the sync")
    assert event.status == "succeeded", (event.last_error, event.steps)
    assert [(s["name"], s["state"]) for s in event.steps] == [
        ("classify", "succeeded"),
        ("apply_rules", "succeeded"),
    ]
    assert event.steps[0]["result"]["classified"] == 2 and event.steps[0]["result"]["spam"] == 1
    conn = dovecot.client(mailbox_user)
    try:
        conn.select("Junk")
        junk = conn.search(None, "ALL")[1][0].split()
        conn.select("INBOX")
        inbox = conn.search(None, "ALL")[1][0].split()
    finally:
        conn.logout()
    assert (len(junk), len(inbox)) == (1, 1)
