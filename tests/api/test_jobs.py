"""Queueing endpoints: authorise, record an Event, publish, answer 202; Idempotency-Key."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from database.models import Event, OutboundAttachment, SendDraft
from tests.api.keys import imap_account, make_account, make_caller, make_message
from tests.peers import RedisServer


@pytest.fixture(scope="module")
def quiet_broker():
    """A Redis no worker consumes, so the published messages can be read back as they are."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def app(settings, quiet_broker):
    from api.app import create_app

    application = create_app(settings.model_copy(update={"redis_url": quiet_broker.url}))
    async with application.router.lifespan_context(application):
        yield application


async def events(db, *tenant_ids) -> list[Event]:
    """The events of the test's tenants, oldest first."""
    query = sa.select(Event).where(Event.tenant_id.in_(tenant_ids)).order_by(Event.received_at)
    async with db.sessionmaker() as s:
        return list((await s.execute(query)).scalars())


async def published(redis_url: str, queue: str) -> list[dict]:
    """Task messages waiting in a queue (every priority list of it), as the broker holds them."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        out = []
        async for key in r.scan_iter(f"{queue}*"):
            if (await r.type(key)) == b"list":
                for raw in await r.lrange(key, 0, -1):
                    out.append(json.loads(raw))
        return out
    finally:
        await r.aclose()


def task_ids(messages: list[dict]) -> set[str]:
    return {m["headers"]["id"] for m in messages}


async def test_sync_records_event_and_publishes(client, db, quiet_broker) -> None:
    caller = await make_caller(db)
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=caller.headers)).json()
    r = await client.post(
        f"/v1/accounts/{acc['id']}/sync",
        json={"folder": "INBOX", "full": True},
        headers=caller.headers,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert set(job) == {"event_id", "task_id"}
    [event] = await events(db, caller.tenant_id)
    assert str(event.id) == job["event_id"] and event.task_ids == [job["task_id"]]
    assert event.source == "api" and event.task_name == "postroom.mail.sync_account"
    assert event.task_kwargs == {
        "account_id": acc["id"],
        "folder": "INBOX",
        "full": True,
        "tenant_id": str(caller.tenant_id),
        "user_id": str(caller.user_id),
    }
    assert job["task_id"] in task_ids(await published(quiet_broker.url, "bulk."))


async def test_sync_without_body_is_accepted(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    r = await client.post(f"/v1/accounts/{account}/sync", headers=caller.headers)
    assert r.status_code == 202, r.text


async def test_idempotency_key_returns_same_job_and_conflicts_on_other_body(
    client, db, quiet_broker
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    headers = {**caller.headers, "Idempotency-Key": "abc-1"}
    first = await client.post(f"/v1/accounts/{account}/sync", json={"full": False}, headers=headers)
    again = await client.post(f"/v1/accounts/{account}/sync", json={"full": False}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert len(await events(db, caller.tenant_id)) == 1
    assert (
        len(
            [
                m
                for m in await published(quiet_broker.url, "bulk.")
                if m["headers"]["id"] == first.json()["task_id"]
            ]
        )
        == 1
    )
    other = await client.post(f"/v1/accounts/{account}/sync", json={"full": True}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    # The same key in another tenant is another job.
    stranger = await make_caller(db)
    their = await make_account(db, stranger)
    r = await client.post(
        f"/v1/accounts/{their}/sync",
        json={"full": False},
        headers={**stranger.headers, "Idempotency-Key": "abc-1"},
    )
    assert r.status_code == 202 and r.json() != first.json()


async def test_send_stores_uploads_and_keeps_secrets_out_of_the_event(
    client, db, quiet_broker
) -> None:
    caller = await make_caller(db)
    acc = (
        await client.post(
            "/v1/accounts", json=imap_account(password="pw-never-in-events"), headers=caller.headers
        )
    ).json()
    body = {
        "account_id": acc["id"],
        "to": [{"email": "bo@example.com", "name": "Bo"}],
        "subject": "Hi",
        "text": "Hello",
        "attachments": [
            {
                "filename": "a.txt",
                "content_type": "text/plain",
                "content_base64": base64.b64encode(b"file!").decode(),
            }
        ],
    }
    r = await client.post("/v1/messages/send", json=body, headers=caller.headers)
    assert r.status_code == 202, r.text
    [event] = await events(db, caller.tenant_id)
    kw = event.task_kwargs
    assert event.task_name == "postroom.mail.send"
    # Ids only on the event and in the task message; the mail is the event's draft row.
    assert kw == {
        "account_id": acc["id"],
        "tenant_id": str(caller.tenant_id),
        "user_id": str(caller.user_id),
    }
    assert event.payload == {"kind": "message.send", "kwargs": kw}
    stored = json.dumps(kw) + json.dumps(event.payload)
    assert "pw-never-in-events" not in stored and "bo@example.com" not in stored
    async with db.sessionmaker() as s:
        uploads = sa.select(OutboundAttachment).where(
            OutboundAttachment.tenant_id == caller.tenant_id
        )
        [upload] = (await s.execute(uploads)).scalars()
        drafts = sa.select(SendDraft).where(SendDraft.tenant_id == caller.tenant_id)
        [draft] = (await s.execute(drafts)).scalars()
    assert draft.event_id == event.id and draft.tenant_id == caller.tenant_id
    assert draft.to_addrs == [{"email": "bo@example.com", "name": "Bo"}] and draft.text == "Hello"
    assert draft.subject == "Hi" and draft.cc_addrs == [] and draft.bcc_addrs == []
    assert draft.reply_to_message_id is None
    assert draft.attachment_ids == [str(upload.id)]
    assert upload.content == b"file!" and upload.event_id == event.id
    messages = await published(quiet_broker.url, "short.")
    assert r.json()["task_id"] in task_ids(messages)
    [message] = [m for m in messages if m["headers"]["id"] == r.json()["task_id"]]
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [] and kwargs == {**kw, "event_id": str(event.id)}
    assert json.loads(message["headers"]["kwargsrepr"]) == kwargs
    assert message["headers"]["argsrepr"] == "()"


async def test_send_rejects_bad_base64_and_bad_recipients(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    base = {
        "account_id": str(account),
        "to": [{"email": "bo@example.com"}],
        "subject": "s",
        "text": "t",
    }
    bad64 = {**base, "attachments": [{"filename": "a", "content_base64": "%%%"}]}
    assert (
        await client.post("/v1/messages/send", json=bad64, headers=caller.headers)
    ).status_code == 422
    for to in ([], [{"email": "not-an-address"}]):
        r = await client.post("/v1/messages/send", json={**base, "to": to}, headers=caller.headers)
        assert r.status_code == 422
    assert await events(db, caller.tenant_id) == []


async def test_delete_and_classify(client, db, settings) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    m1, m2 = await make_message(db, caller, account), await make_message(db, caller, account)
    r = await client.post(
        "/v1/messages/delete",
        json={"message_ids": [str(m1), str(m2)], "permanent": True},
        headers=caller.headers,
    )
    assert r.status_code == 202, r.text
    c = await client.post(f"/v1/messages/{m1}/classify", headers=caller.headers)
    assert c.status_code == 202, c.text
    deleted, classified = await events(db, caller.tenant_id)
    assert deleted.task_name == "postroom.mail.delete"
    assert (
        deleted.task_kwargs["message_ids"] == [str(m1), str(m2)]
        and deleted.task_kwargs["permanent"] is True
    )
    assert classified.task_name == "postroom.mail.classify"
    assert classified.task_kwargs["message_id"] == str(m1)


async def test_workflows(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    listed = await client.get("/v1/workflows", headers=caller.headers)
    assert listed.status_code == 200
    names = {w["name"]: w["steps"] for w in listed.json()["data"]}
    assert set(names) == {"sync-and-classify", "triage"} and all(names.values())
    r = await client.post(
        "/v1/workflows/triage", json={"account_id": str(account)}, headers=caller.headers
    )
    assert r.status_code == 202, r.text
    [event] = await events(db, caller.tenant_id)
    assert event.task_kwargs["workflow"] == "triage"
    unknown = await client.post(
        "/v1/workflows/nope", json={"account_id": str(account)}, headers=caller.headers
    )
    assert unknown.status_code == 404


async def test_other_tenants_targets_are_404_and_record_nothing(client, db) -> None:
    owner, other = await make_caller(db), await make_caller(db)
    account = await make_account(db, owner)
    message = await make_message(db, owner, account)
    attempts = [
        (f"/v1/accounts/{account}/sync", {}),
        (
            "/v1/messages/send",
            {"account_id": str(account), "to": [{"email": "a@b.co"}], "text": "x"},
        ),
        ("/v1/messages/delete", {"message_ids": [str(message)]}),
        (f"/v1/messages/{message}/classify", None),
        ("/v1/workflows/sync-and-classify", {"account_id": str(account)}),
        (f"/v1/events/{uuid.uuid4()}/replay", None),
    ]
    for path, body in attempts:
        r = await client.post(path, json=body, headers=other.headers)
        assert r.status_code == 404, (path, r.text)
    assert await events(db, owner.tenant_id, other.tenant_id) == []


async def test_both_publish_paths_show_only_id_like_kwargs(settings, quiet_broker) -> None:
    """argsrepr/kwargsrepr (what Flower and Celery's log lines show) hide every value whose
    key is not an id or flag, on the API's AsyncPublisher and on Celery's own producer."""
    from worker.app import make_celery
    from worker.dispatch import AsyncPublisher, publish

    app = make_celery(
        settings.model_copy(update={"redis_url": quiet_broker.url}), publisher_only=True
    )
    kwargs = {"account_id": str(uuid.uuid4()), "folder": "Clients/Acme private", "full": True}
    sync_id, async_id = str(uuid.uuid4()), str(uuid.uuid4())
    event_id = uuid.uuid4()
    assert publish(
        app,
        task_name="postroom.mail.sync_account",
        event_id=event_id,
        task_id=sync_id,
        kwargs=kwargs,
    )
    publisher = AsyncPublisher(app, quiet_broker.url, timeout=2)
    try:
        assert await publisher.publish(
            task_name="postroom.mail.sync_account",
            event_id=event_id,
            task_id=async_id,
            kwargs=kwargs,
        )
    finally:
        await publisher.close()
    found = {m["headers"]["id"]: m for m in await published(quiet_broker.url, "bulk.")}
    for task_id in (sync_id, async_id):
        headers = found[task_id]["headers"]
        assert headers["argsrepr"] == "()"
        assert json.loads(headers["kwargsrepr"]) == {
            "account_id": kwargs["account_id"],
            "folder": "...",
            "full": True,
            "event_id": str(event_id),
        }
        # The task itself still gets every argument.
        _, sent, _ = json.loads(base64.b64decode(found[task_id]["body"]))
        assert sent["folder"] == "Clients/Acme private"
