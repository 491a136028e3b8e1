"""Odd but possible input that once answered 5xx or was refused only after a 202."""

from __future__ import annotations

from urllib.parse import unquote

from database.models import Attachment
from tests.api.keys import imap_account, make_account, make_caller, make_message


async def test_attachment_with_a_non_latin_name_downloads_with_its_exact_name(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    mid = await make_message(db, caller, account, has_attachments=True)
    async with db.transaction() as s:
        att = Attachment(
            tenant_id=caller.tenant_id,
            message_id=mid,
            filename='报告 "Q3"\r\n.pdf',
            content_type="application/pdf",
            size=5,
            content=b"%PDF-",
        )
        s.add(att)
    r = await client.get(f"/v1/messages/{mid}/attachments/{att.id}", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.content == b"%PDF-"
    assert r.headers["content-type"] == "application/pdf"
    disposition = r.headers["content-disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == '报告 "Q3"\r\n.pdf'


async def test_odd_stored_content_type_is_not_echoed(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    mid = await make_message(db, caller, account, has_attachments=True)
    async with db.transaction() as s:
        att = Attachment(
            tenant_id=caller.tenant_id,
            message_id=mid,
            filename="x.bin",
            content_type="text/html\r\nX-Evil: 1",
            size=1,
            content=b"x",
        )
        s.add(att)
    r = await client.get(f"/v1/messages/{mid}/attachments/{att.id}", headers=caller.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert "x-evil" not in r.headers


async def test_send_with_a_line_break_in_subject_or_name_is_422_at_once(client, db) -> None:
    caller = await make_caller(db)
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=caller.headers)).json()
    base = {"account_id": acc["id"], "to": [{"email": "bo@example.com"}], "text": "hi"}
    for body in (
        {**base, "subject": "hello\r\nBcc: victim@example.com"},
        {**base, "to": [{"email": "bo@example.com", "name": "Bo\nBcc: x@example.com"}]},
    ):
        r = await client.post("/v1/messages/send", json=body, headers=caller.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"


async def test_rule_with_a_non_string_category_is_422_not_500(client, db) -> None:
    caller = await make_caller(db)
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=caller.headers)).json()
    for condition in ({"category": []}, {"category": {}}, {"from_domain": 5}):
        r = await client.post(
            f"/v1/accounts/{acc['id']}/rules",
            json={
                "name": "r",
                "condition": condition,
                "action": {"type": "move", "folder_role": "junk"},
            },
            headers=caller.headers,
        )
        assert r.status_code == 422, (condition, r.text)
