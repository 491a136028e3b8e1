"""A bounce's whole trip on real peers: a send through the SMTP peer, a DSN for it delivered
into Dovecot's Maildir, an IMAP sync; then the sent message shows the bounce in `delivery`,
the address is suppressed, `message.bounced` is recorded, and the next send leaves it out."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from database.models import Tenant, TenantEvent
from database.repositories.events import rows as events_repo
from services.imap.sync import run_sync
from services.outbound.send import SendRequest, send_message
from tests.api.keys import Caller, make_caller
from tests.imap_fixtures import Dovecot
from tests.smtp_fixtures import create_send_event, create_smtp_account


async def _send(db: Any, settings: Any, account: Any, **request: Any) -> Any:
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    return await send_message(
        db,
        settings=settings,
        account=account,
        event=event,
        request=SendRequest(**{"subject": "Hello", "body_text": "Hi.", **request}),
        nylas=None,
    )


def _dsn(*, to: str, failed: str, original_id: str | None) -> bytes:
    """A Postfix-style DSN; with `original_id`, it returns the original's headers."""
    headers = (
        f"\n--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {original_id}\nSubject: Hello\n"
        if original_id
        else ""
    )
    return (
        (
            f"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\nTo: {to}\n"
            f"Subject: Undelivered Mail Returned to Sender\nMessage-ID: <{uuid.uuid4().hex}@mx>\n"
            "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;"
            ' boundary="B"\n\n'
            f"--B\nContent-Type: text/plain\n\n<{failed}>: host mx.example.org said: 550 5.1.1 "
            "User unknown\n\n--B\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx\n\n"
            f"Final-Recipient: rfc822; {failed}\nAction: failed\nStatus: 5.1.1\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{failed}>: User unknown\n{headers}\n--B--\n"
        )
        .encode()
        .replace(b"\n", b"\r\n")
    )


async def _setup(
    db: Any, settings: Any, dovecot: Dovecot, user: str, peer: Any
) -> tuple[Any, Caller]:
    caller = await make_caller(db)
    async with db.transaction() as s:
        tenant = await s.get(Tenant, caller.tenant_id)
    account = await create_smtp_account(
        db,
        settings,
        smtp=peer.credential(),
        imap=dovecot.credentials(user)["imap"],
        email=user,
        tenant=tenant,
    )
    return account, caller


async def test_a_bounce_synced_from_dovecot_links_suppresses_and_the_next_send_skips_it(
    db, settings, client, dovecot: Dovecot, mailbox_user: str, smtp_server
) -> None:
    peer = smtp_server()
    account, caller = await _setup(db, settings, dovecot, mailbox_user, peer)
    first = await _send(db, settings, account, to=["gone@example.org", "ok@example.org"])
    assert sorted(peer.received[0].rcpt_tos) == ["gone@example.org", "ok@example.org"]

    dovecot.deliver(
        mailbox_user,
        _dsn(
            to=mailbox_user,
            failed="gone@example.org",
            original_id=first.result["message_id_header"],
        ),
    )
    result = await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    assert result.as_dict()["status"] == "success"

    sent = await client.get(f"/v1/messages/{first.result['message_id']}", headers=caller.headers)
    assert sent.status_code == 200, sent.text
    [line] = sent.json()["delivery"]
    assert (line["email"], line["kind"], line["status"], line["hard"]) == (
        "gone@example.org",
        "bounce",
        "5.1.1",
        True,
    )
    report = await client.get(f"/v1/messages/{line['report_id']}", headers=caller.headers)
    assert report.json()["report"]["recipients"][0]["reason"] == "user_unknown"
    listed = (await client.get("/v1/suppressions", headers=caller.headers)).json()["data"]
    assert [(s["email"], s["report_id"]) for s in listed] == [
        ("gone@example.org", line["report_id"])
    ]
    async with db.transaction() as s:
        types = (
            await s.execute(
                sa.select(TenantEvent.type).where(TenantEvent.tenant_id == account.tenant_id)
            )
        ).scalars()
        # The send and the sync tell their own events too; the report is told exactly once.
        told = list(types)
        assert told.count("message.bounced") == 1
        assert "message.sent" in told and "message.created" in told

    # A second sync stores nothing new and tells of no message again (only that it ran).
    await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    async with db.transaction() as s:
        again = list(
            (
                await s.execute(
                    sa.select(TenantEvent.type).where(TenantEvent.tenant_id == account.tenant_id)
                )
            ).scalars()
        )
    assert sorted(again) == sorted([*told, "account.sync_completed"])

    second = await _send(db, settings, account, to=["gone@example.org", "ok@example.org"])
    assert second.result["suppressed"] == ["gone@example.org"]
    assert peer.received[-1].rcpt_tos == ["ok@example.org"]


async def test_a_bounce_without_the_original_is_linked_by_its_verp_address(
    db, settings, client, dovecot: Dovecot, mailbox_user: str, smtp_server
) -> None:
    peer = smtp_server()
    account, caller = await _setup(db, settings, dovecot, mailbox_user, peer)
    await _send(
        db, settings, account, to=["gone@example.org", "ok@example.org"], options={"verp": True}
    )
    [return_path] = [r.mail_from for r in peer.received if r.rcpt_tos == ["gone@example.org"]]
    assert return_path.startswith("bounces+")
    # The bouncing server answers the return path and keeps nothing of the original.
    dovecot.deliver(mailbox_user, _dsn(to=return_path, failed="gone@example.org", original_id=None))
    await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    listed = (await client.get("/v1/suppressions", headers=caller.headers)).json()["data"]
    assert [s["email"] for s in listed] == ["gone@example.org"]


async def test_the_mailto_unsubscribe_link_suppresses_when_its_mail_is_synced(
    db, settings, client, dovecot: Dovecot, mailbox_user: str, smtp_server
) -> None:
    from urllib.parse import parse_qs, urlparse

    peer = smtp_server()
    account, caller = await _setup(db, settings, dovecot, mailbox_user, peer)
    options = {"unsubscribe": True, "public_url": "https://mail.example.test"}
    await _send(db, settings, account, to=["reader@example.org"], options=options)
    links = [v.strip(" <>") for v in str(peer.received[0].message["List-Unsubscribe"]).split(",")]
    mailto = urlparse(next(v for v in links if v.startswith("mailto:")))
    assert mailto.path == mailbox_user
    subject = parse_qs(mailto.query)["subject"][0]
    # What the reader's mail client sends for that link, arriving in the sender's mailbox.
    dovecot.deliver(
        mailbox_user,
        (
            f"From: reader@example.org\r\nTo: {mailbox_user}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.org>\r\n\r\n\r\n"
        ).encode(),
    )
    # A forged one (another token) changes nothing.
    dovecot.deliver(
        mailbox_user,
        f"From: x@example.org\r\nTo: {mailbox_user}\r\nSubject: unsubscribe "
        f"{'A' * 30}.{'B' * 22}\r\n\r\n\r\n".encode(),
    )
    await run_sync(db, settings, tenant_id=account.tenant_id, account_id=account.id)
    listed = (await client.get("/v1/suppressions", headers=caller.headers)).json()["data"]
    assert [(s["email"], s["reason"]) for s in listed] == [("reader@example.org", "unsubscribed")]
