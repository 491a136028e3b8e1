"""GET /v1/events[/{id}], POST /v1/events/{id}/replay and GET /v1/tasks/{task_id}.

The tests that write an event's states themselves queue their jobs through `unserved_client`:
a worker that ran the job would change the states under them (these tests used to pass only
when they ran before the session's worker started)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from database.models import Event
from tests.api.keys import make_account, make_caller


async def _queue_sync(client, caller, account) -> dict:
    r = await client.post(f"/v1/accounts/{account}/sync", headers=caller.headers)
    assert r.status_code == 202, r.text
    return r.json()


async def _set(db, event_id: str, **values) -> None:
    async with db.transaction() as s:
        await s.execute(sa.update(Event).where(Event.id == uuid.UUID(event_id)).values(**values))


async def test_task_states_follow_the_event(unserved_client, db) -> None:
    client = unserved_client
    caller = await make_caller(db)
    account = await make_account(db, caller)
    job = await _queue_sync(client, caller, account)
    cases = [
        ({"status": "received"}, "PENDING", None, None),
        ({"status": "processing", "progress": {"done": 3, "total": 10}}, "STARTED", None, None),
        (
            {"status": "retrying", "last_error": "timeout talking to IMAP"},
            "RETRY",
            None,
            {"message": "timeout talking to IMAP"},
        ),
        (
            {"status": "succeeded", "result": {"status": "success", "new": 4}, "last_error": None},
            "SUCCESS",
            {"status": "success", "new": 4},
            None,
        ),
        (
            {"status": "dead", "last_error": "bad credentials"},
            "FAILURE",
            None,
            {"message": "bad credentials"},
        ),
    ]
    for values, state, result, error in cases:
        await _set(db, job["event_id"], **values)
        r = await client.get(f"/v1/tasks/{job['task_id']}", headers=caller.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["task_id"] == job["task_id"] and body["event_id"] == job["event_id"]
        assert body["state"] == state
        if result is not None:
            assert body["result"] == result
        if error is not None:
            assert body["error"]["message"] == error["message"]
        else:
            assert body["error"] is None
        if state == "STARTED":
            assert body["progress"] == {"done": 3, "total": 10}


async def test_unknown_or_foreign_task_is_404(unserved_client, db) -> None:
    client = unserved_client
    owner, other = await make_caller(db), await make_caller(db)
    job = await _queue_sync(client, owner, await make_account(db, owner))
    assert (
        await client.get(f"/v1/tasks/{job['task_id']}", headers=other.headers)
    ).status_code == 404
    assert (await client.get("/v1/tasks/nope", headers=owner.headers)).status_code == 404


async def test_events_list_filter_paginate_and_get(unserved_client, db) -> None:
    client = unserved_client
    caller = await make_caller(db)
    account = await make_account(db, caller)
    jobs = [await _queue_sync(client, caller, account) for _ in range(3)]
    await _set(db, jobs[0]["event_id"], status="dead", last_error="boom", attempts=3)
    page = await client.get("/v1/events", params={"limit": 2}, headers=caller.headers)
    assert page.status_code == 200
    body = page.json()
    assert [e["id"] for e in body["data"]] == [j["event_id"] for j in jobs[::-1][:2]]
    rest = await client.get(
        "/v1/events", params={"limit": 2, "cursor": body["next_cursor"]}, headers=caller.headers
    )
    assert [e["id"] for e in rest.json()["data"]] == [jobs[0]["event_id"]]
    dead = await client.get(
        "/v1/events", params={"status": "dead", "source": "api"}, headers=caller.headers
    )
    [event] = dead.json()["data"]
    assert set(event) == {
        "id",
        "source",
        "type",
        "external_id",
        "status",
        "attempts",
        "task_ids",
        "last_error",
        "received_at",
        "finished_at",
        # Added with scheduled sends (API.md "Additions"): the time, or null.
        "send_at",
        # Added with coalescing (issue 12): the event that did a coalesced one's work, or null.
        "coalesced_into",
    }
    assert event["coalesced_into"] is None
    assert event["last_error"] == "boom" and event["attempts"] == 3 and event["source"] == "api"
    got = await client.get(f"/v1/events/{jobs[1]['event_id']}", headers=caller.headers)
    assert got.status_code == 200 and got.json()["task_ids"] == [jobs[1]["task_id"]]
    other = await make_caller(db)
    assert (
        await client.get(f"/v1/events/{jobs[1]['event_id']}", headers=other.headers)
    ).status_code == 404
    assert (await client.get("/v1/events", headers=other.headers)).json()["data"] == []
    wrong = await client.get(
        "/v1/events",
        params={"cursor": body["next_cursor"], "status": "dead"},
        headers=caller.headers,
    )
    assert wrong.status_code == 400


async def test_replay_finished_event_only(unserved_client, db) -> None:
    client = unserved_client
    caller = await make_caller(db)
    job = await _queue_sync(client, caller, await make_account(db, caller))
    busy = await client.post(f"/v1/events/{job['event_id']}/replay", headers=caller.headers)
    assert busy.status_code == 409
    await _set(db, job["event_id"], status="dead", last_error="x")
    r = await client.post(f"/v1/events/{job['event_id']}/replay", headers=caller.headers)
    assert r.status_code == 202, r.text
    replay = r.json()
    assert replay["event_id"] == job["event_id"] and replay["task_id"] != job["task_id"]
    task = await client.get(f"/v1/tasks/{replay['task_id']}", headers=caller.headers)
    assert task.json()["state"] == "PENDING"


async def test_classify_job_runs_on_a_real_worker_and_reports_success(client, db, worker) -> None:
    from tests.api.keys import make_message
    from tests.helpers import wait_for

    caller = await make_caller(db)
    account = await make_account(db, caller)
    message = await make_message(
        db,
        caller,
        account,
        subject="WIN a FREE prize now!!!",
        text="Click here to claim your free money http://bit.ly/x",
    )
    r = await client.post(f"/v1/messages/{message}/classify", headers=caller.headers)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]

    async def finished():
        t = (await client.get(f"/v1/tasks/{task_id}", headers=caller.headers)).json()
        return t if t["state"] in ("SUCCESS", "FAILURE") else None

    task = await wait_for(finished, timeout=60, message="the classify task to finish")
    assert task["state"] == "SUCCESS", task
    assert task["result"]["status"] == "success"
    assert isinstance(task["result"]["is_spam"], bool) and 0 <= task["result"]["spam_score"] <= 1
    event = (await client.get(f"/v1/events/{r.json()['event_id']}", headers=caller.headers)).json()
    assert event["status"] == "succeeded" and event["attempts"] >= 1 and event["finished_at"]
