"""A new message from a webhook is classified and ruled in the transaction that stores it when
every matching rule is local (services.classify.inline), through a real worker; a matching rule
that moves mail keeps the step tasks (tests/worker/test_workflows.py pins those)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Event, Message, Rule
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, wait_for

pytestmark = pytest.mark.usefixtures("worker")

HAM = dict(
    subject="Re: build script",
    body="<p>Thanks, I applied your patch to the build script; the tests pass here.</p>",
    **{"from": [{"name": "Alice", "email": "alice@example.org"}]},
)


async def add_rules(db: Any, account: Account) -> None:
    async with db.transaction() as s:
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="spam to junk",
                condition={"is_spam": True},
                action={"type": "move", "folder_role": "junk"},
            )
        )
        s.add(
            Rule(
                tenant_id=account.tenant_id,
                account_id=account.id,
                name="team",
                condition={"from_domain": "example.org"},
                action={"type": "label", "label": "team"},
                position=1,
            )
        )


async def run_of(db: Any, account: Account) -> Event:
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
            return ev if ev is not None and ev.status in ("succeeded", "dead") else None

    return await wait_for(check, timeout=30, message="the classify-message run to finish")


async def test_a_ham_message_with_local_rules_is_classified_and_labelled_in_one_transaction(
    client: Any, db: Any, fake_nylas: Any
) -> None:
    account = await create_nylas_account(db)
    await add_rules(db, account)
    msg = make_message(account.grant_id, f"m-{uuid.uuid4().hex[:6]}", **HAM)
    r = await post_webhook(client, notification("message.created", msg))
    assert r.status_code == 200
    run = await run_of(db, account)
    assert run.status == "succeeded"
    assert [(s["name"], s["state"], s["attempts"]) for s in run.steps] == [
        ("classify", "succeeded", 1),
        ("apply_rules", "succeeded", 1),
    ]
    # Never published: both steps ran inside the process task's transaction.
    assert run.publish_count == 0
    assert run.result is not None and run.result["applied"] == ["label:team"]
    assert run.result["steps"] == {"classify": "succeeded", "apply_rules": "succeeded"}
    assert run.steps[0]["result"]["is_spam"] is False
    async with db.sessionmaker() as s:
        row = (
            await s.execute(sa.select(Message).where(Message.account_id == account.id))
        ).scalar_one()
    assert row.is_spam is False and row.spam_score is not None
    assert row.labels == ["INBOX", "team"]
    assert fake_nylas.requests_to(f"/v3/grants/{account.grant_id}/messages/{msg['id']}") == []


async def test_a_spam_message_whose_rule_moves_it_goes_through_the_step_tasks(
    client: Any, db: Any, fake_nylas: Any
) -> None:
    account = await create_nylas_account(db)
    await add_rules(db, account)
    phish = dict(
        subject="Urgent: your account will be suspended",
        body="<p>Unusual sign-in activity. Verify your account and enter your password at "
        '<a href="http://203.0.113.9/login">www.paypal.com</a> within 24 hours.</p>',
        **{"from": [{"name": "PayPal Security", "email": "security@paypa1-alerts.com"}]},
    )
    msg = make_message(account.grant_id, f"m-{uuid.uuid4().hex[:6]}", **phish)
    fake_nylas.put_message(account.grant_id, msg)
    r = await post_webhook(client, notification("message.created", msg))
    assert r.status_code == 200
    run = await run_of(db, account)
    # No Junk folder: the move step fails for good, as a step task, with its dead letter.
    assert run.status == "dead"
    assert [(s["name"], s["state"]) for s in run.steps] == [
        ("classify", "succeeded"),
        ("apply_rules", "dead"),
    ]
    assert run.publish_count > 0
    async with db.sessionmaker() as s:
        row = (
            await s.execute(sa.select(Message).where(Message.account_id == account.id))
        ).scalar_one()
    assert row.is_spam is True and row.labels == ["INBOX"]
