"""A send leaves suppressed recipients out (and says so), fails permanently when all are,
obeys ignore_suppression; VERP and one-click unsubscribe give each recipient its own return
path and List-Unsubscribe headers. Against a real aiosmtpd server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from database.repositories.events import rows as events_repo
from database.repositories.reports import suppressions as suppressions_repo
from services.outbound.send import SendRequest, send_message
from services.reports import tokens
from services.reports.suppressions import AllRecipientsSuppressed
from tests.smtp_fixtures import create_send_event, create_smtp_account

REQUEST = dict(
    to=["bob@example.org", "Gone@Example.org"],
    cc=[],
    bcc=["hidden@example.net"],
    subject="Hi",
    body_text="Hello",
)


async def _send(db, settings, account, **overrides: Any):
    event_id, _, _ = await create_send_event(db, account=account, kwargs={})
    async with db.transaction() as s:
        event = await events_repo.get(s, event_id)
    return await send_message(
        db,
        settings=settings,
        account=account,
        event=event,
        request=SendRequest(**{**REQUEST, **overrides}),
        nylas=None,
    )


async def _suppress(db, account, *emails: str) -> None:
    async with db.transaction() as s:
        await suppressions_repo.add(
            s,
            tenant_id=account.tenant_id,
            rows=[{"email": e, "reason": "user_unknown", "report_id": None} for e in emails],
        )


async def test_suppressed_recipients_are_left_out_and_listed(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    await _suppress(db, account, "gone@example.org")
    outcome = await _send(db, settings, account)
    assert outcome.result["suppressed"] == ["gone@example.org"]
    assert outcome.result["recipients_sent"] == 2
    [got] = peer.received
    assert sorted(got.rcpt_tos) == ["bob@example.org", "hidden@example.net"]
    assert "Gone@Example.org" not in str(got.message["To"])


async def test_every_recipient_suppressed_fails_permanently(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    await _suppress(db, account, "bob@example.org", "gone@example.org", "hidden@example.net")
    with pytest.raises(AllRecipientsSuppressed) as caught:
        await _send(db, settings, account)
    assert caught.value.code == "all_recipients_suppressed" and not caught.value.transient
    assert peer.received == []


async def test_ignore_suppression_sends_to_everyone(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    await _suppress(db, account, "gone@example.org")
    outcome = await _send(db, settings, account, options={"ignore_suppression": True})
    assert outcome.result["suppressed"] == [] and outcome.result["recipients_sent"] == 3


async def test_another_tenants_list_changes_nothing(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    other = await create_smtp_account(db, settings, smtp=peer.credential())
    await _suppress(db, other, "gone@example.org")
    outcome = await _send(db, settings, account)
    assert outcome.result["suppressed"] == [] and outcome.result["recipients_sent"] == 3


async def test_verp_gives_each_recipient_a_signed_return_path(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    outcome = await _send(db, settings, account, options={"verp": True})
    assert outcome.result["recipients_sent"] == 3
    assert len(peer.received) == 3
    ids = set()
    for got in peer.received:
        [rcpt] = got.rcpt_tos
        assert got.mail_from.startswith("bounces+") and got.mail_from.endswith("@example.com")
        assert len(got.mail_from.partition("@")[0]) <= 64
        found = tokens.read_verp(settings, got.mail_from)
        assert found is not None and tokens.is_recipient(found[1], rcpt)
        ids.add(found[0])
        assert got.message["Message-ID"] == outcome.result["message_id_header"]
    assert len(ids) == 1


async def test_unsubscribe_adds_one_click_headers_per_recipient(db, settings, smtp_server) -> None:
    peer = smtp_server()
    account = await create_smtp_account(db, settings, smtp=peer.credential())
    options = {"unsubscribe": True, "public_url": "https://mail.example.test"}
    await _send(db, settings, account, options=options)
    assert len(peer.received) == 3
    for got in peer.received:
        [rcpt] = got.rcpt_tos
        assert got.mail_from == "sender@example.com"
        assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = [v.strip(" <>") for v in str(got.message["List-Unsubscribe"]).split(",")]
        assert https.startswith("https://mail.example.test/u/") and mailto.startswith("mailto:")
        token = https.rsplit("/", 1)[1]
        assert tokens.read_unsubscribe(settings, token) == (account.tenant_id, rcpt.lower())


def test_tokens_refuse_tampering(settings) -> None:
    tenant = uuid.uuid4()
    token = tokens.unsubscribe_token(settings, tenant_id=tenant, email="a@b.example")
    assert tokens.read_unsubscribe(settings, token) == (tenant, "a@b.example")
    body, mac = token.split(".")
    assert tokens.read_unsubscribe(settings, body[:-2] + "AA." + mac) is None
    assert tokens.read_unsubscribe(settings, "x" * 5000) is None
    verp = tokens.verp_address(
        settings, outbound_id=tenant, recipient="a@b.example", domain="d.example"
    )
    assert tokens.read_verp(settings, verp) is not None
    local, _, domain = verp.partition("@")
    flipped = local[:10] + ("a" if local[10] != "a" else "b") + local[11:]
    assert tokens.read_verp(settings, f"{flipped}@{domain}") is None
    assert tokens.read_verp(settings, "bounces+zzz@d.example") is None
