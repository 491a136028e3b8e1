"""GET /v1/feed as a client pages it: envelopes in seq order, `next_after`, tenant scope, and
`message.*` data that is the message exactly as GET /v1/messages lists it."""

from __future__ import annotations

from services.tenant_events.emit import TenantEventType, emit, emit_messages
from tests.api.keys import make_account, make_caller, make_folder, make_message


async def test_the_feed_pages_in_seq_order_with_next_after(client, db) -> None:
    caller = await make_caller(db)
    async with db.transaction() as s:
        for n in range(5):
            await emit(
                s, tenant_id=caller.tenant_id, type=TenantEventType.job_failed, data={"n": n}
            )
    r = await client.get("/v1/feed", params={"limit": 2}, headers=caller.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["seq"] for i in body["data"]] == [1, 2] and body["next_after"] == 2
    first = body["data"][0]
    assert set(first) == {"id", "type", "timestamp", "seq", "data"}
    assert first["type"] == "job.failed" and first["data"] == {"n": 0}
    assert first["timestamp"].endswith("Z")
    rest = await client.get(
        "/v1/feed", params={"after": body["next_after"], "limit": 10}, headers=caller.headers
    )
    assert [i["data"]["n"] for i in rest.json()["data"]] == [2, 3, 4]
    assert rest.json()["next_after"] == 5
    empty = await client.get("/v1/feed", params={"after": 5}, headers=caller.headers)
    assert empty.json() == {"data": [], "next_after": 5}


async def test_a_tenant_reads_only_its_own_events(client, db) -> None:
    one, other = await make_caller(db), await make_caller(db)
    async with db.transaction() as s:
        await emit(s, tenant_id=other.tenant_id, type=TenantEventType.job_failed, data={})
    r = await client.get("/v1/feed", headers=one.headers)
    assert r.json() == {"data": [], "next_after": 0}
    assert len((await client.get("/v1/feed", headers=other.headers)).json()["data"]) == 1
    assert (await client.get("/v1/feed")).status_code == 401


async def test_message_data_is_the_message_as_the_list_shows_it(client, db) -> None:
    caller = await make_caller(db)
    account_id = await make_account(db, caller)
    folder_id = await make_folder(db, caller, account_id, "INBOX", "inbox")
    mid = await make_message(
        db,
        caller,
        account_id,
        folder_id=folder_id,
        text="the body, never in an event",
        html="<p>the body</p>",
        is_spam=True,
        spam_score=0.93,
        spam_indicators=["url"],
        cc_addrs=[{"name": None, "email": "cc@example.com"}],
    )
    async with db.transaction() as s:
        assert (
            await emit_messages(
                s,
                tenant_id=caller.tenant_id,
                type=TenantEventType.message_created,
                message_ids=[mid, mid],
            )
            == 1
        )
    listed = (await client.get("/v1/messages", headers=caller.headers)).json()["data"]
    feed = (await client.get("/v1/feed", headers=caller.headers)).json()["data"]
    assert [e["type"] for e in feed] == ["message.created"]
    assert feed[0]["data"] == {"message": listed[0]}
    assert "the body" not in str(feed)


async def test_an_sse_reader_gets_422_for_a_bad_last_event_id(client, db) -> None:
    caller = await make_caller(db)
    r = await client.get(
        "/v1/feed",
        headers={**caller.headers, "Accept": "text/event-stream", "Last-Event-ID": "x"},
    )
    assert r.status_code == 422
