"""/v1/accounts: create, list, get, patch, soft delete, folders; secrets stay encrypted."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from database.models import Credential, Folder
from services.crypto import decrypt_json
from tests.api.keys import imap_account, make_caller

ACCOUNT_FIELDS = {
    "id",
    "provider",
    "email",
    "status",
    "sync_interval_s",
    "last_sync_at",
    "created_at",
}


async def test_create_imap_account_returns_it_without_secrets(client, db, settings) -> None:
    caller = await make_caller(db)
    r = await client.post(
        "/v1/accounts", json=imap_account(password="hunter2-secret"), headers=caller.headers
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == ACCOUNT_FIELDS
    assert body["provider"] == "imap" and body["status"] == "active"
    assert body["sync_interval_s"] == 300 and body["last_sync_at"] is None
    assert "hunter2-secret" not in r.text
    async with db.sessionmaker() as s:
        cred = (
            await s.execute(sa.select(Credential).where(Credential.tenant_id == caller.tenant_id))
        ).scalar_one()
    assert str(cred.account_id) == body["id"]
    assert "hunter2-secret" not in cred.ciphertext
    assert decrypt_json(settings, cred.ciphertext)["imap"]["password"] == "hunter2-secret"


async def test_create_nylas_account_and_duplicate_grant_is_409(client, db, fake_nylas) -> None:
    caller = await make_caller(db)
    grant = f"grant-{uuid.uuid4().hex[:12]}"  # a live grant id is unique across tenants
    fake_nylas.put_grant(grant, "N@example.com")
    body = {"provider": "nylas", "email": "n@example.com", "nylas": {"grant_id": grant}}
    r = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert r.status_code == 201, r.text
    assert r.json()["provider"] == "nylas"
    again = await client.post("/v1/accounts", json=body, headers=caller.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


async def test_invalid_account_body_is_422_with_details(client, db) -> None:
    caller = await make_caller(db)
    bad = imap_account()
    bad["imap"]["port"] = 70000
    r = await client.post("/v1/accounts", json=bad, headers=caller.headers)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["details"]
    r = await client.post(
        "/v1/accounts", json={"provider": "pop3", "email": "x@y.z"}, headers=caller.headers
    )
    assert r.status_code == 422


async def test_list_get_patch_delete(client, db) -> None:
    caller = await make_caller(db)
    ids = []
    for i in range(3):
        r = await client.post(
            "/v1/accounts", json=imap_account(f"a{i}@example.com"), headers=caller.headers
        )
        ids.append(r.json()["id"])
    page = await client.get("/v1/accounts", params={"limit": 2}, headers=caller.headers)
    assert page.status_code == 200
    first = page.json()
    assert [a["id"] for a in first["data"]] == ids[::-1][:2]
    rest = await client.get(
        "/v1/accounts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=caller.headers
    )
    assert [a["id"] for a in rest.json()["data"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None

    got = await client.get(f"/v1/accounts/{ids[0]}", headers=caller.headers)
    assert got.status_code == 200 and got.json()["email"] == "a0@example.com"
    patched = await client.patch(
        f"/v1/accounts/{ids[0]}",
        json={"sync_interval_s": 900, "status": "disabled"},
        headers=caller.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["sync_interval_s"] == 900 and patched.json()["status"] == "disabled"

    gone = await client.delete(f"/v1/accounts/{ids[0]}", headers=caller.headers)
    assert gone.status_code == 204
    assert (await client.get(f"/v1/accounts/{ids[0]}", headers=caller.headers)).status_code == 404
    listed = await client.get("/v1/accounts", headers=caller.headers)
    assert ids[0] not in [a["id"] for a in listed.json()["data"]]


async def test_patch_replaces_encrypted_password(client, db, settings) -> None:
    caller = await make_caller(db)
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=caller.headers)).json()
    new_imap = {
        "host": "imap2.example.com",
        "port": 143,
        "security": "starttls",
        "username": "ana",
        "password": "new-pass-42",
    }
    r = await client.patch(
        f"/v1/accounts/{acc['id']}", json={"imap": new_imap}, headers=caller.headers
    )
    assert r.status_code == 200 and "new-pass-42" not in r.text
    async with db.sessionmaker() as s:
        cred = (
            await s.execute(sa.select(Credential).where(Credential.tenant_id == caller.tenant_id))
        ).scalar_one()
    assert decrypt_json(settings, cred.ciphertext)["imap"]["password"] == "new-pass-42"


async def test_other_tenants_account_is_404_everywhere(client, db) -> None:
    owner, other = await make_caller(db), await make_caller(db)
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=owner.headers)).json()
    for method, path, body in [
        ("GET", f"/v1/accounts/{acc['id']}", None),
        ("PATCH", f"/v1/accounts/{acc['id']}", {"sync_interval_s": 600}),
        ("DELETE", f"/v1/accounts/{acc['id']}", None),
        ("GET", f"/v1/accounts/{acc['id']}/folders", None),
        ("POST", f"/v1/accounts/{acc['id']}/sync", {}),
    ]:
        r = await client.request(method, path, json=body, headers=other.headers)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert (await client.get("/v1/accounts", headers=other.headers)).json()["data"] == []
    assert (await client.get(f"/v1/accounts/{acc['id']}", headers=owner.headers)).status_code == 200


async def test_folders_with_message_counts(client, db) -> None:
    caller = await make_caller(db)
    acc = (await client.post("/v1/accounts", json=imap_account(), headers=caller.headers)).json()
    async with db.transaction() as s:
        s.add(
            Folder(
                tenant_id=caller.tenant_id,
                account_id=uuid.UUID(acc["id"]),
                name="INBOX",
                role="inbox",
            )
        )
    r = await client.get(f"/v1/accounts/{acc['id']}/folders", headers=caller.headers)
    assert r.status_code == 200
    [folder] = r.json()["data"]
    assert folder["name"] == "INBOX" and folder["role"] == "inbox" and folder["message_count"] == 0


async def test_secrets_never_reach_logs_answers_or_events(client, db, capfd) -> None:
    caller = await make_caller(db)
    secret = "pw-" + uuid.uuid4().hex
    created = await client.post(
        "/v1/accounts", json=imap_account(password=secret), headers=caller.headers
    )
    bad = imap_account(password=secret)
    bad["imap"]["port"] = "nope"
    rejected = await client.post("/v1/accounts", json=bad, headers=caller.headers)
    sync = await client.post(f"/v1/accounts/{created.json()['id']}/sync", headers=caller.headers)
    assert created.status_code == 201 and rejected.status_code == 422 and sync.status_code == 202
    out, err = capfd.readouterr()
    for text in (created.text, rejected.text, sync.text, out, err):
        assert secret not in text
    async with db.sessionmaker() as s:
        dumped = (
            await s.execute(
                sa.text(
                    "SELECT payload::text || task_kwargs::text FROM event WHERE tenant_id = :t"
                ),
                {"t": caller.tenant_id},
            )
        ).scalar_one()
    assert secret not in dumped


async def test_a_grant_must_exist_and_belong_to_the_address_given(client, db, fake_nylas) -> None:
    caller = await make_caller(db)
    fake_nylas.put_grant("grant-of-bo", "bo@example.com")
    for grant_id, email in (
        ("no-such-grant", "ana@example.com"),
        ("grant-of-bo", "ana@example.com"),
    ):
        body = {"provider": "nylas", "email": email, "nylas": {"grant_id": grant_id}}
        r = await client.post("/v1/accounts", json=body, headers=caller.headers)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
    listed = (await client.get("/v1/accounts", headers=caller.headers)).json()
    assert listed["data"] == []
    assert [q.path for q in fake_nylas.requests_to("/v3/grants/")] == [
        "/v3/grants/no-such-grant",
        "/v3/grants/grant-of-bo",
    ]
