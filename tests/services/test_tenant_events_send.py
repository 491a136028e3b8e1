"""A send tells the tenant's application how it went, through the real aiosmtpd peer:
message.sent once per sent message (a retry that only finishes the bookkeeping tells nothing
new), message.send_failed when the server refuses for good, with its codes but never its
words or the recipients."""

from __future__ import annotations

import pytest

from services.outbound.smtp import SmtpRejected
from tests.services.test_smtp_send import _send
from tests.smtp_fixtures import create_smtp_account
from tests.tenant_feed import feed_of, kinds


async def test_a_sent_message_is_told_once_with_the_stored_message(
    db, settings, smtp_server
) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, outcome = await _send(db, settings, account)
    await _send(db, settings, account, event_id=event_id)  # the bookkeeping runs again
    assert len(peer.received) == 1

    events = await feed_of(db, account.tenant_id)
    assert kinds(events)["message.sent"] == 1
    [sent] = [e for e in events if e["type"] == "message.sent"]
    message = sent["data"]["message"]
    assert message["id"] == outcome.result["message_id"]
    assert message["subject"] == "Quarterly report - Grüße"
    assert message["message_id_header"] == outcome.result["message_id_header"]
    assert sent["data"]["send"] == {
        "event_id": str(event_id),
        "account_id": str(account.id),
        "message_id_header": outcome.result["message_id_header"],
        "recipients_sent": 3,
    }
    # The list's fields (its snippet among them), never the bodies.
    assert "text" not in message and "html" not in message
    assert "<b>in</b>" not in str(events)


@pytest.mark.parametrize("mode", ["5xx", "rcpt_5xx"])
async def test_a_refused_send_is_told_with_codes_only(db, settings, smtp_server, mode) -> None:
    peer = smtp_server(mode=mode)
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    with pytest.raises(SmtpRejected):
        await _send(db, settings, account)
    events = await feed_of(db, account.tenant_id)
    assert kinds(events) == {"message.send_failed": 1}
    data = events[0]["data"]
    assert data["message"] is None
    assert data["send"]["account_id"] == str(account.id)
    assert data["send"]["error"]["code"] == "smtp_rejected"
    assert data["send"]["error"]["smtp_code"] in (550, 554)
    text = str(events)
    assert "policy violation" not in text and "bob@example.org" not in text
