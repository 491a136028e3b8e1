"""The send service against real aiosmtpd servers (and Dovecot for the Sent copy): the bytes
each server received are parsed and checked, and the ledger decides what is sent again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Message, OutboundMessage
from database.repositories.events import rows as events_repo
from services.errors import BadCredentials, ValidationFailed
from services.outbound.send import SendRequest, send_message
from services.outbound.smtp import DeliveryUnknown, SmtpRejected, SmtpTemporaryError
from tests.smtp_fixtures import create_send_event, create_smtp_account

REQUEST = dict(
    to=[{"email": "bob@example.org", "name": "Bøb Öster"}],
    cc=["carol@example.org"],
    bcc=["hidden@example.net"],
    subject="Quarterly report - Grüße",
    body_text="Hello Bob,\nthe numbers are in.",
    body_html="<p>Hello Bob,</p><p>the numbers are <b>in</b>.</p>",
)


async def _send(db, settings, account, *, event_id=None, **overrides: Any):
    if event_id is None:
        event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    outcome = await send_message(
        db,
        settings=settings,
        account=account,
        event=event,
        request=SendRequest(**{**REQUEST, **overrides}),
        nylas=None,
    )
    return event_id, outcome


async def _ledger(db, account) -> list[OutboundMessage]:
    query = sa.select(OutboundMessage).where(OutboundMessage.tenant_id == account.tenant_id)
    async with db.transaction() as s:
        return list((await s.execute(query)).scalars())


@pytest.mark.parametrize(
    ("security", "auth"), [("none", False), ("none", True), ("starttls", True), ("tls", True)]
)
async def test_send_in_each_security_mode_delivers_a_correct_message(
    db, settings, smtp_server, security: str, auth: bool
) -> None:
    peer = smtp_server(security=security, auth=auth)
    account = await create_smtp_account(
        db, settings, smtp=peer.credential(), display_name="Zoë Sender"
    )
    _, outcome = await _send(db, settings, account)

    assert len(peer.received) == 1
    got = peer.received[0]
    assert got.mail_from == "sender@example.com"
    assert sorted(got.rcpt_tos) == ["bob@example.org", "carol@example.org", "hidden@example.net"]
    assert b"hidden@example.net" not in got.data
    msg = got.message
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Quarterly report - Grüße"
    assert msg["From"].addresses[0].display_name == "Zoë Sender"
    assert msg["To"].addresses[0].display_name == "Bøb Öster"
    assert msg.get_content_type() == "multipart/alternative"
    assert "the numbers are in." in msg.get_body(("plain",)).get_content()
    assert msg["Message-ID"] == outcome.result["message_id_header"]
    assert msg["Date"] is not None

    assert outcome.result["status"] == "success"
    assert outcome.result["recipients_sent"] == len(got.rcpt_tos) == 3
    [row] = await _ledger(db, account)
    assert sorted(row.recipients) == sorted(got.rcpt_tos)
    assert row.status == "sent" and row.server_reply.startswith("250")
    async with db.transaction() as s:
        stored = await s.get(Message, uuid.UUID(outcome.result["message_id"]))
    assert stored is not None and stored.message_id_header == msg["Message-ID"]
    assert stored.bcc_addrs == [{"name": None, "email": "hidden@example.net"}]


async def test_wrong_smtp_password_is_a_permanent_credentials_error(
    db, settings, smtp_server
) -> None:
    peer = smtp_server(auth=True)
    account = await create_smtp_account(db, settings, smtp=peer.credential(password="wrong"))
    with pytest.raises(BadCredentials):
        await _send(db, settings, account)
    assert peer.received == []


async def test_same_event_twice_sends_once(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, first = await _send(db, settings, account)
    _, second = await _send(db, settings, account, event_id=event_id)
    assert len(peer.received) == 1
    assert second.result["message_id_header"] == first.result["message_id_header"]
    assert second.result["status"] == "success"


async def test_5xx_is_permanent_with_the_server_answer(db, settings, smtp_server) -> None:
    peer = smtp_server(mode="5xx")
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    with pytest.raises(SmtpRejected) as info:
        await _send(db, settings, account)
    # The tenant sees the codes; the server's own words stay in the ledger for operators.
    assert "554 5.7.1" in info.value.message
    assert "policy violation" not in info.value.message
    [row] = await _ledger(db, account)
    assert row.status == "failed"
    assert row.server_reply == "554 5.7.1 Message rejected: policy violation"


async def test_4xx_leaves_the_message_pending_and_the_retry_sends_it(
    db, settings, smtp_server
) -> None:
    peer = smtp_server(mode="4xx_then_2xx")
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    with pytest.raises(SmtpTemporaryError) as info:
        await _send(db, settings, account, event_id=event_id)
    assert info.value.transient and "451" in info.value.message
    assert (await _ledger(db, account))[0].status == "pending"
    _, outcome = await _send(db, settings, account, event_id=event_id)
    assert outcome.result["status"] == "success"
    assert len(peer.received) == 1 and peer.handler.data_calls == 2


async def test_lost_answer_after_data_is_never_sent_again(db, settings, smtp_server) -> None:
    peer = smtp_server(mode="drop_after_data")
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    with pytest.raises(DeliveryUnknown) as info:
        await _send(db, settings, account, event_id=event_id)
    assert not info.value.transient
    assert (await _ledger(db, account))[0].status == "sending"
    with pytest.raises(DeliveryUnknown):
        await _send(db, settings, account, event_id=event_id)
    assert len(peer.received) == 1


async def test_no_answer_after_data_times_out_as_unknown(db, settings, smtp_server) -> None:
    peer = smtp_server(mode="hang_after_data")
    account = await create_smtp_account(db, settings, smtp={**peer.credential(), "timeout": 0.5})
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    with pytest.raises(DeliveryUnknown):
        await _send(db, settings, account, event_id=event_id)
    assert (await _ledger(db, account))[0].status == "sending"
    assert len(peer.received) == 1


@pytest.mark.parametrize(
    "field_, value",
    [
        ("subject", "Hi\r\nBcc: victim@example.org"),
        ("to", [{"email": "bob@example.org", "name": "Bob\nBcc: victim@example.org"}]),
    ],
)
async def test_header_injection_is_refused_before_anything_is_sent(
    db, settings, smtp_server, field_: str, value: Any
) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    with pytest.raises(ValidationFailed):
        await _send(db, settings, account, **{field_: value})
    assert peer.received == [] and await _ledger(db, account) == []


async def test_reply_threads_and_other_tenants_message_is_refused(
    db, settings, smtp_server
) -> None:
    from datetime import UTC, datetime

    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    other = await create_smtp_account(db, settings, smtp=peer.credential())
    async with db.transaction() as s:
        mine = Message(
            tenant_id=account.tenant_id,
            account_id=account.id,
            provider_id="INBOX:1:7",
            message_id_header="<parent@example.org>",
            references=["<root@example.org>"],
            sort_at=datetime.now(UTC),
        )
        theirs = Message(
            tenant_id=other.tenant_id,
            account_id=other.id,
            provider_id="INBOX:1:8",
            message_id_header="<theirs@example.org>",
            sort_at=datetime.now(UTC),
        )
        s.add_all([mine, theirs])
    await _send(db, settings, account, reply_to_message_id=str(mine.id))
    msg = peer.received[0].message
    assert msg["In-Reply-To"] == "<parent@example.org>"
    assert msg["References"].split() == ["<root@example.org>", "<parent@example.org>"]
    with pytest.raises(ValidationFailed):
        await _send(db, settings, account, reply_to_message_id=str(theirs.id))
    assert len(peer.received) == 1


async def test_uploaded_attachment_is_sent(db, settings, smtp_server) -> None:
    from database.models import OutboundAttachment

    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    async with db.transaction() as s:
        upload = OutboundAttachment(
            tenant_id=account.tenant_id,
            event_id=event_id,
            filename="report.pdf",
            content_type="application/pdf",
            size=6,
            content=b"%PDF\x00\x01",
        )
        s.add(upload)
    await _send(db, settings, account, event_id=event_id, attachment_ids=[str(upload.id)])
    msg = peer.received[0].message
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "report.pdf" and att.get_content() == b"%PDF\x00\x01"


async def test_copy_is_appended_to_the_imap_sent_folder(
    db, settings, smtp_server, dovecot, mailbox_user
) -> None:
    peer = smtp_server()
    imap = dovecot.credentials(mailbox_user)["imap"]
    account = await create_smtp_account(db, settings, smtp=peer.credential(), imap=imap)
    _, outcome = await _send(db, settings, account)
    assert outcome.result["sent_copy"] == "appended"

    conn = dovecot.client(mailbox_user)
    try:
        typ, _ = conn.select("Sent", readonly=True)
        assert typ == "OK"
        typ, data = conn.uid(
            "SEARCH", None, "HEADER", "Message-ID", outcome.result["message_id_header"].strip("<>")
        )
        uids = data[0].split()
        assert len(uids) == 1
        typ, fetched = conn.uid("FETCH", uids[0], "(FLAGS BODY.PEEK[])")
        assert b"\\Seen" in fetched[0][0]
        assert b"hidden@example.net" not in fetched[0][1]
    finally:
        conn.logout()
    async with db.transaction() as s:
        stored = await s.get(Message, uuid.UUID(outcome.result["message_id"]))
    assert stored.imap_uid == int(uids[0])
    assert stored.provider_id.startswith("Sent:") and stored.provider_id.endswith(
        f":{int(uids[0])}"
    )

    # The IMAP sync then sees the same message in Sent: it updates our row, adds none.
    from services.imap.sync import run_sync

    await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id, folder="Sent")
    async with db.sessionmaker() as s:
        stmt = sa.select(Message).where(
            Message.account_id == account.id,
            Message.message_id_header == outcome.result["message_id_header"],
        )
        rows = (await s.execute(stmt)).scalars().all()
    assert [r.id for r in rows] == [stored.id]
