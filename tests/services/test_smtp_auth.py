"""SMTP credentials are optional together (API.md "Additions" / Accounts): an account without
them sends without AUTH through a relay; an account with them never sends unauthenticated."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from database.models import OutboundMessage
from database.repositories.events import rows as events_repo
from services.errors import BadCredentials
from services.outbound.send import SendRequest, send_message
from services.outbound.smtp import SmtpAuthUnavailable, SmtpConfig
from tests.smtp_fixtures import USERNAME, create_send_event, create_smtp_account

NO_AUTH_SENTENCE = (
    "The SMTP server does not offer AUTH, but the account has SMTP credentials; "
    "refusing to send them unauthenticated."
)


async def _send(db: Any, settings: Any, account: Any) -> Any:
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    return await send_message(
        db,
        settings=settings,
        account=account,
        event=event,
        request=SendRequest(to=["bob@example.org"], subject="Relay", body_text="Via relay."),
        nylas=None,
    )


async def test_an_account_without_smtp_credentials_sends_through_a_relay_without_auth(
    db, settings, smtp_server, dovecot, mailbox_user
) -> None:
    relay = smtp_server(auth=False)
    smtp = relay.credential()
    assert "username" not in smtp and "password" not in smtp
    imap = dovecot.credentials(mailbox_user)["imap"]
    account = await create_smtp_account(db, settings, smtp=smtp, imap=imap)
    outcome = await _send(db, settings, account)

    assert outcome.result["status"] == "success"
    assert outcome.result["recipients_sent"] == 1
    [got] = relay.received
    assert got.mail_from == USERNAME and got.rcpt_tos == ["bob@example.org"]
    assert got.message["Subject"] == "Relay"
    assert got.message.get_content().strip() == "Via relay."
    # The Sent copy needs only the IMAP credentials.
    assert outcome.result["sent_copy"] == "appended"


async def test_credentials_and_a_server_without_auth_fail_for_good_and_send_nothing(
    db, settings, smtp_server
) -> None:
    relay = smtp_server(auth=False)
    smtp = {**relay.credential(), "username": USERNAME, "password": "never-sent-plain"}
    account = await create_smtp_account(db, settings, smtp=smtp)
    with pytest.raises(SmtpAuthUnavailable) as info:
        await _send(db, settings, account)
    assert info.value.message == NO_AUTH_SENTENCE
    assert not info.value.transient  # permanent: the retry policy dead-letters it at once
    assert relay.received == [] and relay.handler.data_calls == 0
    async with db.sessionmaker() as s:
        mine = sa.select(OutboundMessage).where(OutboundMessage.account_id == account.id)
        [row] = (await s.execute(mine)).scalars()
    assert row.status == "pending"  # nothing was handed over


@pytest.mark.parametrize("present", ["username", "password"])
def test_a_stored_credential_with_one_half_is_refused(present: str) -> None:
    smtp = {"host": "mx.example", "port": 25, "security": "none", present: "x"}
    with pytest.raises(BadCredentials):
        SmtpConfig.from_credential(smtp)
