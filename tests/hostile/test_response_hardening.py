"""Response hardening (issue 20 item 8), each as an attacker would try it: a browser sniffing
our answers into HTML, a mail attachment served as a page of our origin, the webhook challenge
used to serve arbitrary text, a Message-ID that makes every reply to it fail, and a login
that smuggles its own commands to the mail server."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy

import httpx
import pytest

from database.models import Attachment
from services.messages.mime import parse
from services.outbound.compose import Person, ReplyTarget, compose
from tests.api.keys import imap_account, make_account, make_caller, make_message

# Every character that str.splitlines() splits on (the stdlib refuses header values with one).
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


async def test_every_answer_says_nosniff(client: httpx.AsyncClient, db) -> None:
    caller = await make_caller(db)
    answers = [
        await client.get("/health/live"),
        await client.get("/v1/accounts", headers=caller.headers),
        await client.get("/v1/accounts"),  # 401
        await client.get(f"/v1/messages/{uuid.uuid4()}", headers=caller.headers),  # 404
        await client.get("/no/such/route"),
        await client.post("/v1/accounts", headers=caller.headers, json={"provider": "x"}),  # 422
        await client.get("/webhooks/nylas", params={"challenge": "abc"}),
        # The lean webhook path, ahead of FastAPI's stack.
        await client.post("/webhooks/nylas", content=b"{}", headers={"X-Nylas-Signature": "0"}),
    ]
    for r in answers:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)


@pytest.mark.parametrize(
    ("stored_type", "served_type"),
    [
        ("text/html", "application/octet-stream"),
        ("text/html; charset=utf-8", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("application/xhtml+xml", "application/octet-stream"),
        ("text/xml", "application/octet-stream"),
        ("application/javascript", "application/octet-stream"),
        ("TEXT/HTML", "application/octet-stream"),
        ("image/png", "image/png"),
        ("application/pdf", "application/pdf"),
        ("text/plain; charset=iso-8859-1", "text/plain; charset=iso-8859-1"),
    ],
)
async def test_attachments_outside_the_safe_list_are_opaque_downloads(
    client: httpx.AsyncClient, db, stored_type: str, served_type: str
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    mid = await make_message(db, caller, account, has_attachments=True)
    payload = b"<html><script>alert(document.cookie)</script></html>"
    async with db.transaction() as s:
        att = Attachment(
            tenant_id=caller.tenant_id,
            message_id=mid,
            filename="invoice.html",
            content_type=stored_type,
            size=len(payload),
            content=payload,
        )
        s.add(att)
    r = await client.get(f"/v1/messages/{mid}/attachments/{att.id}", headers=caller.headers)
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["content-type"] == served_type
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_webhook_challenge_is_capped(client: httpx.AsyncClient) -> None:
    ok = await client.get("/webhooks/nylas", params={"challenge": "c" * 200})
    assert ok.status_code == 200 and ok.text == "c" * 200
    page = "<html><body>" + "Sign in again to postroom: " * 20 + "</body></html>"
    r = await client.get("/webhooks/nylas", params={"challenge": page})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"
    assert "Sign in again" not in r.text


@pytest.mark.parametrize("char", list(LINE_BREAKS))
def test_a_message_id_with_a_line_break_can_be_replied_to(char: str) -> None:
    raw = (
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n"
        f"Message-ID: <evil{char}id@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    ).encode()
    stored = parse(raw).message_id_header
    assert stored is not None and "evil" in stored
    assert len(stored.splitlines()) == 1
    composed = compose(
        sender=Person("b@example.com"),
        to=[Person("a@example.com")],
        cc=[],
        bcc=[],
        subject="Re: hi",
        body_text="answer",
        body_html=None,
        reply_to_message=ReplyTarget(stored, []),
    )
    assert str(message_from_bytes(composed.data, policy=policy.default)["In-Reply-To"]) == stored


@pytest.mark.parametrize("char", ["\u2028", "\x1c", "\x85"])
def test_a_reply_to_an_id_stored_before_the_fix_still_goes_out(char: str) -> None:
    composed = compose(
        sender=Person("b@example.com"),
        to=[Person("a@example.com")],
        cc=[],
        bcc=[],
        subject="Re: hi",
        body_text="answer",
        body_html=None,
        reply_to_message=ReplyTarget(f"<old{char}id@example.com>", [f"<r{char}1@x>"]),
    )
    assert b"In-Reply-To: <oldid@example.com>" in composed.data
    assert b"References: <r1@x> <oldid@example.com>" in composed.data


@pytest.mark.parametrize("provider", ["imap", "pop3"])
@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("char", ["\r", "\n", "\x00"])
async def test_line_breaks_and_nul_in_mail_logins_are_refused(
    client: httpx.AsyncClient, db, provider: str, field: str, char: str
) -> None:
    caller = await make_caller(db)
    body = imap_account()
    if provider == "pop3":
        body["provider"] = "pop3"
        body["pop3"] = {**body.pop("imap"), "port": 995}
    body[provider][field] = f"ana{char}A1 LOGOUT"
    r = await client.post("/v1/accounts", headers=caller.headers, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert "LOGOUT" not in r.text
    verify = await client.post("/v1/accounts/verify", headers=caller.headers, json=body)
    assert verify.status_code == 422, verify.text
