"""A stored delivery report is linked to the send it names (Message-ID, Original-Envelope-Id,
VERP), shows in the sent message's `delivery`, suppresses a hard bounce or a complaint, and
tells the tenant `message.bounced` / `message.complained`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from database.models import OutboundMessage, Suppression, TenantEvent
from database.repositories.messages import rows as messages_repo
from services.messages.mime import parse
from services.reports import tokens
from services.reports.ingest import record_stored
from tests.api.keys import Caller, make_account, make_caller, make_message

SAMPLES = Path(__file__).parent / "report_samples"


async def _send(
    db: Any, caller: Caller, account: uuid.UUID, msgid: str, to: list[str]
) -> uuid.UUID:
    async with db.transaction() as s:
        row = OutboundMessage(
            tenant_id=caller.tenant_id,
            account_id=account,
            message_id_header=msgid,
            recipients=to,
            status="sent",
        )
        s.add(row)
    await make_message(db, caller, account, message_id_header=msgid, subject="sent")
    return row.id


async def _store_report(db: Any, caller: Caller, account: uuid.UUID, raw: bytes) -> uuid.UUID:
    """Store a received message as the sync paths do: upsert, then record_stored."""
    values = parse(raw).columns()
    values.update(
        tenant_id=caller.tenant_id,
        account_id=account,
        provider_id=f"p-{uuid.uuid4().hex}",
        sort_at=datetime.now(UTC),
    )
    async with db.transaction() as s:
        saved = await messages_repo.upsert_many(s, [values])
        message_id, inserted = saved[values["provider_id"]]
        assert inserted
        await record_stored(s, tenant_id=caller.tenant_id, stored=[(message_id, values)])
    return message_id


async def _suppressed(db: Any, tenant_id: uuid.UUID) -> dict[str, Any]:
    async with db.transaction() as s:
        rows = (
            await s.execute(sa.select(Suppression).where(Suppression.tenant_id == tenant_id))
        ).scalars()
        return {r.email: (r.reason, r.report_id) for r in rows}


async def _events(db: Any, tenant_id: uuid.UUID) -> list[TenantEvent]:
    async with db.transaction() as s:
        stmt = sa.select(TenantEvent).where(TenantEvent.tenant_id == tenant_id)
        return list((await s.execute(stmt)).scalars())


async def _message(client: Any, caller: Caller, message_id: uuid.UUID) -> dict[str, Any]:
    r = await client.get(f"/v1/messages/{message_id}", headers=caller.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_a_hard_bounce_links_suppresses_and_emits(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    await _send(db, caller, account, "<orig-1@sender.example>", ["nobody@example.org"])
    report_id = await _store_report(db, caller, account, (SAMPLES / "postfix_dsn.eml").read_bytes())

    listed = (await client.get("/v1/messages", headers=caller.headers)).json()["data"]
    sent = next(m for m in listed if m["subject"] == "sent")
    bounce = next(m for m in listed if m["id"] == str(report_id))
    assert bounce["report"]["kind"] == "bounce"
    assert set(bounce["report"]) == {"kind", "recipients", "original_message_id", "feedback_type"}
    detail = await _message(client, caller, sent["id"])
    [line] = detail["delivery"]
    assert {k: line[k] for k in ("email", "report_id", "kind", "status", "hard")} == {
        "email": "nobody@example.org",
        "report_id": str(report_id),
        "kind": "bounce",
        "status": "5.1.1",
        "hard": True,
    }
    assert (await _message(client, caller, report_id))["delivery"] == []
    assert await _suppressed(db, caller.tenant_id) == {
        "nobody@example.org": ("user_unknown", report_id)
    }
    [event] = await _events(db, caller.tenant_id)
    assert event.type == "message.bounced"
    assert event.data["message"]["id"] == str(report_id)
    assert event.data["report"]["recipients"][0]["email"] == "nobody@example.org"
    assert "text" not in event.data["message"] and "html" not in event.data["message"]


async def test_a_reputation_block_links_but_does_not_suppress(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    sent = await _send(db, caller, account, "<orig-8@sender.example>", ["blocked@contoso.com"])
    assert sent
    await _store_report(db, caller, account, (SAMPLES / "o365_dsn.eml").read_bytes())
    assert await _suppressed(db, caller.tenant_id) == {}
    [event] = await _events(db, caller.tenant_id)
    assert event.data["report"]["recipients"][0]["hard"] is False


async def test_a_complaint_suppresses_and_emits_complained(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    await _send(db, caller, account, "<orig-5@sender.example>", ["angry@example.com"])
    report_id = await _store_report(db, caller, account, (SAMPLES / "arf.eml").read_bytes())
    assert await _suppressed(db, caller.tenant_id) == {
        "angry@example.com": ("complaint", report_id)
    }
    [event] = await _events(db, caller.tenant_id)
    assert event.type == "message.complained"
    assert event.data["report"]["feedback_type"] == "abuse"


async def test_a_bounce_about_mail_postroom_never_sent_suppresses_nothing(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    await _store_report(db, caller, account, (SAMPLES / "postfix_dsn.eml").read_bytes())
    assert await _suppressed(db, caller.tenant_id) == {}


async def test_another_tenants_send_is_never_linked(client, db) -> None:
    caller, other = await make_caller(db), await make_caller(db)
    other_account = await make_account(db, other)
    await _send(db, other, other_account, "<orig-1@sender.example>", ["nobody@example.org"])
    account = await make_account(db, caller)
    await _store_report(db, caller, account, (SAMPLES / "postfix_dsn.eml").read_bytes())
    assert await _suppressed(db, caller.tenant_id) == {}
    assert await _suppressed(db, other.tenant_id) == {}


def _headerless_dsn(to: str, *, envelope_id: str = "") -> bytes:
    """A DSN that returned no part of the original: only VERP or ENVID can link it."""
    envid = f"Original-Envelope-Id: {envelope_id}\n" if envelope_id else ""
    return (
        f"From: MAILER-DAEMON@mx.example.net\nTo: {to}\nSubject: Undelivered Mail\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nfailed\n--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.net\n{envid}\n"
        "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n\n--B--\n"
    ).encode()


async def test_a_verp_return_path_links_a_report_without_the_original(client, db, settings) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    send = await _send(
        db, caller, account, f"<{uuid.uuid4().hex}@x>", ["a@x.org", "gone@example.org"]
    )
    verp = tokens.verp_address(
        settings, outbound_id=send, recipient="gone@example.org", domain="sender.example"
    )
    forged = verp.replace("bounces+", "bounces+a")
    await _store_report(db, caller, account, _headerless_dsn(forged))
    assert await _suppressed(db, caller.tenant_id) == {}
    report_id = await _store_report(db, caller, account, _headerless_dsn(verp))
    assert await _suppressed(db, caller.tenant_id) == {
        "gone@example.org": ("user_unknown", report_id)
    }


async def test_an_original_envelope_id_links_a_report(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    send = await _send(db, caller, account, f"<{uuid.uuid4().hex}@x>", ["gone@example.org"])
    await _store_report(db, caller, account, _headerless_dsn("a@b.example", envelope_id=str(send)))
    assert set(await _suppressed(db, caller.tenant_id)) == {"gone@example.org"}
