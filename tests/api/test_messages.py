"""/v1/messages reads: newest first, keyset cursor, filters, full-text search, detail, bytes."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from database.models import Account, Attachment
from tests.api.keys import make_account, make_caller, make_folder, make_message


async def _list(client, caller, **params):
    r = await client.get("/v1/messages", params=params, headers=caller.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_list_is_newest_first_and_pages_cover_everything_once(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    ids = [await make_message(db, caller, account, minutes_ago=i) for i in range(7)]
    seen, cursor = [], None
    while True:
        page = await _list(client, caller, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in ids]


async def test_pages_are_stable_under_concurrent_inserts(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    ids = [await make_message(db, caller, account, minutes_ago=i + 1) for i in range(4)]
    first = await _list(client, caller, limit=2)
    await make_message(db, caller, account, minutes_ago=0)  # newer than everything listed
    second = await _list(client, caller, limit=2, cursor=first["next_cursor"])
    assert [m["id"] for m in second["data"]] == [str(i) for i in ids[2:]]


async def test_message_shape(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    inbox = await make_folder(db, caller, account, "INBOX", "inbox")
    await make_message(
        db,
        caller,
        account,
        folder_id=inbox,
        from_name="Bo",
        from_email="bo@example.com",
        is_spam=True,
        spam_score=0.93,
        spam_indicators=["url_shortener"],
        category="spam",
    )
    [m] = (await _list(client, caller))["data"]
    assert set(m) == {
        "id",
        "account_id",
        "folder",
        "provider_id",
        "message_id_header",
        "thread_id",
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "snippet",
        "unread",
        "starred",
        "has_attachments",
        "spam",
        "category",
        "deleted",
        "too_large",
        "report",
    }
    assert m["report"] is None
    assert m["from"] == {"name": "Bo", "email": "bo@example.com"}
    assert m["folder"] == "INBOX" and m["deleted"] is False
    assert m["spam"] == {"is_spam": True, "score": 0.93, "indicators": ["url_shortener"]}
    assert m["to"] == [{"name": "Ana", "email": "ana@example.com"}]


async def test_filters(client, db) -> None:
    caller = await make_caller(db)
    a1, a2 = await make_account(db, caller, "a@x.com"), await make_account(db, caller, "b@x.com")
    junk = await make_folder(db, caller, a1, "Junk E-mail", "junk")
    spam = await make_message(db, caller, a1, folder_id=junk, is_spam=True, unread=False)
    unread_ham = await make_message(db, caller, a1, is_spam=False, unread=True)
    other = await make_message(db, caller, a2, unread=True)

    def ids(page):
        return {m["id"] for m in page["data"]}

    assert ids(await _list(client, caller, account_id=str(a2))) == {str(other)}
    assert ids(await _list(client, caller, folder="junk")) == {str(spam)}
    assert ids(await _list(client, caller, folder="Junk E-mail")) == {str(spam)}
    assert ids(await _list(client, caller, is_spam="true")) == {str(spam)}
    assert ids(await _list(client, caller, is_spam="false")) == {str(unread_ham), str(other)}
    assert ids(await _list(client, caller, unread="true", account_id=str(a1))) == {str(unread_ham)}


async def test_a_message_over_the_size_cap_says_too_large_in_list_and_detail(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    big = await make_message(db, caller, account, too_large=True, problem="over the cap")
    small = await make_message(db, caller, account, minutes_ago=1)

    listed = {m["id"]: m["too_large"] for m in (await _list(client, caller))["data"]}
    detail = (await client.get(f"/v1/messages/{big}", headers=caller.headers)).json()

    assert listed == {str(big): True, str(small): False}
    assert detail["too_large"] is True and "problem" not in detail


async def test_full_text_search_over_subject_sender_and_body(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    by_subject = await make_message(
        db, caller, account, subject="Quarterly invoice", text="see attached"
    )
    by_body = await make_message(
        db, caller, account, subject="re", text="The meetings were productive"
    )
    by_sender = await make_message(
        db, caller, account, subject="hi", from_email="carol@corp.example"
    )
    await make_message(db, caller, account, subject="nothing here", text="unrelated words")

    async def found(q: str) -> set[str]:
        return {m["id"] for m in (await _list(client, caller, q=q))["data"]}

    assert await found("invoice") == {str(by_subject)}
    assert await found("meeting") == {str(by_body)}  # stemmed: body is indexed with 'english'
    assert await found("carol@corp.example") == {str(by_sender)}
    assert await found("invoice quarterly") == {str(by_subject)}
    assert await found("invoice meeting") == set()
    assert await found("!!!") == set()


async def test_cursor_from_another_query_or_tampered_is_400(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    for i in range(3):
        await make_message(db, caller, account, minutes_ago=i, unread=True)
    cursor = (await _list(client, caller, limit=1))["next_cursor"]
    other_query = await client.get(
        "/v1/messages",
        params={"limit": 1, "unread": "true", "cursor": cursor},
        headers=caller.headers,
    )
    assert other_query.status_code == 400
    assert other_query.json()["error"]["code"] == "bad_request"
    body, sig = cursor.split(".")
    for bad in [
        body + "x." + sig,
        body + "." + sig[::-1],
        "garbage",
        "a.b",
        cursor + ".",
        "." * 10,
    ]:
        r = await client.get(
            "/v1/messages", params={"cursor": bad, "limit": 1}, headers=caller.headers
        )
        assert r.status_code in (400, 422), (bad, r.status_code)
        assert "error" in r.json()
    other = await make_caller(db)
    r = await client.get(
        "/v1/messages", params={"cursor": cursor, "limit": 1}, headers=other.headers
    )
    assert r.status_code == 400


async def test_deleted_account_messages_are_not_listed(client, db) -> None:
    caller = await make_caller(db)
    keep, drop = await make_account(db, caller), await make_account(db, caller)
    kept = await make_message(db, caller, keep)
    dropped = await make_message(db, caller, drop)
    assert (await client.delete(f"/v1/accounts/{drop}", headers=caller.headers)).status_code == 204
    assert [m["id"] for m in (await _list(client, caller))["data"]] == [str(kept)]
    assert (await client.get(f"/v1/messages/{dropped}", headers=caller.headers)).status_code == 404
    r = await client.get("/v1/messages", params={"account_id": str(drop)}, headers=caller.headers)
    assert r.status_code == 404


async def test_detail_and_attachment_download(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    mid = await make_message(
        db,
        caller,
        account,
        text="plain body",
        html="<p>html body</p>",
        headers=[["Subject", "hello"]],
        has_attachments=True,
    )
    async with db.transaction() as s:
        att = Attachment(
            tenant_id=caller.tenant_id,
            message_id=mid,
            filename="r.pdf",
            content_type="application/pdf",
            size=5,
            content=b"%PDF-",
        )
        s.add(att)
    r = await client.get(f"/v1/messages/{mid}", headers=caller.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "plain body" and body["html"] == "<p>html body</p>"
    assert body["headers"] == [["Subject", "hello"]]
    assert body["attachments"] == [
        {"id": str(att.id), "filename": "r.pdf", "content_type": "application/pdf", "size": 5}
    ]
    dl = await client.get(f"/v1/messages/{mid}/attachments/{att.id}", headers=caller.headers)
    assert dl.status_code == 200
    assert dl.content == b"%PDF-" and dl.headers["content-type"] == "application/pdf"

    other = await make_caller(db)
    assert (await client.get(f"/v1/messages/{mid}", headers=other.headers)).status_code == 404
    assert (
        await client.get(f"/v1/messages/{mid}/attachments/{att.id}", headers=other.headers)
    ).status_code == 404
    missing = await client.get(
        f"/v1/messages/{mid}/attachments/{uuid.uuid4()}", headers=caller.headers
    )
    assert missing.status_code == 404


async def test_other_tenant_sees_nothing(client, db) -> None:
    owner, other = await make_caller(db), await make_caller(db)
    account = await make_account(db, owner)
    await make_message(db, owner, account)
    assert (await _list(client, other))["data"] == []
    r = await client.get("/v1/messages", params={"account_id": str(account)}, headers=other.headers)
    assert r.status_code == 404
    async with db.sessionmaker() as s:
        both = Account.tenant_id.in_([owner.tenant_id, other.tenant_id])
        count = sa.select(sa.func.count()).select_from(Account).where(both)
        assert (await s.execute(count)).scalar_one() == 1
