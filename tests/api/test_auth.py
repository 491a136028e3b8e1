"""Bearer API keys on /v1: missing, malformed, unknown and revoked keys answer 401."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import sqlalchemy as sa

from database.models import ApiKey
from database.repositories import keys as keys_repo
from tests.api.keys import make_caller


async def test_valid_key_reaches_the_api(client: httpx.AsyncClient, db) -> None:
    caller = await make_caller(db)
    r = await client.get("/v1/accounts", headers=caller.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"data": [], "next_cursor": None}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer pr_00000000_nope",
        "Bearer pr_deadbeef_" + "0" * 48,
        "Bearer not-a-key",
        "Bearer " + "x" * 5000,
        "Token abc",
    ],
    ids=[
        "missing",
        "empty",
        "no-key",
        "blank-key",
        "basic",
        "unknown-lower",
        "unknown",
        "not-ours",
        "huge",
        "other-scheme",
    ],
)
async def test_bad_or_missing_key_is_401_with_envelope(client, db, header) -> None:
    await make_caller(db)
    headers = {"Authorization": header} if header is not None else {}
    r = await client.get("/v1/accounts", headers=headers)
    assert r.status_code == 401
    body = r.json()
    assert body["error"]["code"] == "unauthorized"
    assert "Traceback" not in r.text


async def test_revoked_key_is_401_on_its_next_request(client, db) -> None:
    caller = await make_caller(db)
    assert (await client.get("/v1/accounts", headers=caller.headers)).status_code == 200
    async with db.transaction() as s:
        assert await keys_repo.revoke(s, caller.key_id) is True
    r = await client.get("/v1/accounts", headers=caller.headers)
    assert r.status_code == 401


async def test_only_the_hash_of_the_key_is_stored(client, db) -> None:
    caller = await make_caller(db)
    async with db.sessionmaker() as s:
        row = (await s.execute(sa.select(ApiKey).where(ApiKey.id == caller.key_id))).scalar_one()
    assert row.key_hash == hashlib.sha256(caller.key.encode()).hexdigest()
    assert caller.key not in (row.key_hash, row.prefix)
    assert caller.key.startswith(f"pr_{row.prefix}_")


async def test_use_is_recorded(client, db) -> None:
    caller = await make_caller(db)
    await client.get("/v1/accounts", headers=caller.headers)
    async with db.sessionmaker() as s:
        used = (
            await s.execute(sa.select(ApiKey.last_used_at).where(ApiKey.id == caller.key_id))
        ).scalar_one()
    assert used is not None


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/accounts"),
        ("POST", "/v1/accounts"),
        ("GET", "/v1/messages"),
        ("GET", "/v1/events"),
        ("GET", "/v1/workflows"),
        ("GET", "/v1/tasks/abc"),
        ("POST", "/v1/messages/send"),
        ("POST", "/v1/messages/delete"),
    ],
)
async def test_every_v1_route_needs_a_key(client, db, method, path) -> None:
    r = await client.request(method, path, json={})
    assert r.status_code == 401, (path, r.text)
