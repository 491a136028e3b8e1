"""/v1/dead-letters through the ASGI app: tenant-scoped listing, detail, replay, delete."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from api.auth import generate_key
from database.models import Event, Tenant
from database.repositories import keys as keys_repo
from tests.factories import create_tenant, create_user
from tests.services.test_dead_letters import make_dead

FIELDS = {
    "id",
    "event_id",
    "task_name",
    "args",
    "kwargs",
    "exception_type",
    "exception_message",
    "attempts",
    "first_failed_at",
    "last_failed_at",
    "replayed_at",
}


async def auth_for(db: Any, tenant: Tenant) -> dict[str, str]:
    user = await create_user(db, tenant)
    key = generate_key()
    async with db.transaction() as s:
        await keys_repo.create(
            s, tenant_id=tenant.id, user_id=user.id, key_hash=key.key_hash, prefix=key.prefix
        )
    return {"authorization": f"Bearer {key.key}"}


async def test_list_is_paged_and_scoped_to_the_tenant(client: httpx.AsyncClient, db: Any) -> None:
    mine, other = await create_tenant(db), await create_tenant(db)
    made = [
        (await make_dead(db, mine, task_name=t))[0]
        for t in ("postroom.mail.send", "postroom.mail.delete", "postroom.mail.send")
    ]
    await make_dead(db, other)
    headers = await auth_for(db, mine)

    first = await client.get("/v1/dead-letters", params={"limit": 2}, headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert [d["id"] for d in body["data"]] == [str(made[2]), str(made[1])]
    assert set(body["data"][0]) == FIELDS
    second = await client.get(
        "/v1/dead-letters", headers=headers, params={"limit": 2, "cursor": body["next_cursor"]}
    )
    assert [d["id"] for d in second.json()["data"]] == [str(made[0])]
    assert second.json()["next_cursor"] is None

    sends = await client.get(
        "/v1/dead-letters", params={"task": "postroom.mail.send"}, headers=headers
    )
    assert {d["id"] for d in sends.json()["data"]} == {str(made[0]), str(made[2])}
    bad = await client.get("/v1/dead-letters", params={"cursor": "xyz"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


async def test_without_a_key_is_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/dead-letters")
    assert r.status_code == 401 and "error" in r.json()


async def test_get_one_and_another_tenants_is_404(client: httpx.AsyncClient, db: Any) -> None:
    mine, other = await create_tenant(db), await create_tenant(db)
    dl_id, event_id = await make_dead(db, mine)
    theirs, _ = await make_dead(db, other)
    headers = await auth_for(db, mine)

    r = await client.get(f"/v1/dead-letters/{dl_id}", headers=headers)
    assert r.status_code == 200
    data = r.json()
    assert set(data) == FIELDS
    assert data["event_id"] == str(event_id) and data["exception_type"] == "ProviderNotFound"
    assert data["attempts"] == 1 and data["replayed_at"] is None
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/v1/dead-letters/{theirs}", headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.post(f"/v1/dead-letters/{theirs}/replay", headers=headers)
    assert r.status_code == 404
    r = await client.get(f"/v1/dead-letters/{uuid.uuid4()}", headers=headers)
    assert r.status_code == 404


async def test_replay_answers_202_job_and_keeps_history(client: httpx.AsyncClient, db: Any) -> None:
    tenant = await create_tenant(db)
    dl_id, event_id = await make_dead(db, tenant)
    headers = await auth_for(db, tenant)

    r = await client.post(f"/v1/dead-letters/{dl_id}/replay", headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["event_id"] == str(event_id) and job["task_id"]
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    assert event is not None and event.status == "queued"
    assert event.current_task_id == job["task_id"]
    assert [h["outcome"] for h in event.history] == ["dead", "replayed"]
    shown = (await client.get(f"/v1/dead-letters/{dl_id}", headers=headers)).json()
    assert shown["replayed_at"] is not None
    again = await client.post(f"/v1/dead-letters/{dl_id}/replay", headers=headers)
    assert again.status_code == 409


async def test_delete_is_204_then_404(client: httpx.AsyncClient, db: Any) -> None:
    tenant = await create_tenant(db)
    dl_id, _ = await make_dead(db, tenant)
    headers = await auth_for(db, tenant)
    r = await client.delete(f"/v1/dead-letters/{dl_id}", headers=headers)
    assert r.status_code == 204 and r.content == b""
    assert (await client.get(f"/v1/dead-letters/{dl_id}", headers=headers)).status_code == 404
