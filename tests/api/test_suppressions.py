"""/v1/suppressions: list with a cursor, add (201), remove (204), per tenant."""

from __future__ import annotations

from tests.api.keys import make_caller


async def test_add_list_and_remove(client, db) -> None:
    caller = await make_caller(db)
    r = await client.post(
        "/v1/suppressions",
        json={"email": "Bo@Example.com", "reason": "asked"},
        headers=caller.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"email", "reason", "report_id", "created_at"}
    assert (body["email"], body["reason"], body["report_id"]) == ("bo@example.com", "asked", None)
    again = await client.post(
        "/v1/suppressions", json={"email": "bo@example.com"}, headers=caller.headers
    )
    assert again.status_code == 201 and again.json()["reason"] == "asked"

    listed = (await client.get("/v1/suppressions", headers=caller.headers)).json()
    assert [s["email"] for s in listed["data"]] == ["bo@example.com"]
    assert listed["next_cursor"] is None

    gone = await client.delete("/v1/suppressions/BO@example.com", headers=caller.headers)
    assert gone.status_code == 204
    assert (await client.get("/v1/suppressions", headers=caller.headers)).json()["data"] == []
    missing = await client.delete("/v1/suppressions/bo@example.com", headers=caller.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_pages_cover_every_address_once(client, db) -> None:
    caller = await make_caller(db)
    emails = {f"u{i}@example.org" for i in range(7)}
    for e in emails:
        r = await client.post("/v1/suppressions", json={"email": e}, headers=caller.headers)
        assert r.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/suppressions", params=params, headers=caller.headers)).json()
        seen += [s["email"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(emails)
    other = await make_caller(db)
    r = await client.get(
        "/v1/suppressions", params={"cursor": cursor or "x.y"}, headers=other.headers
    )
    assert r.status_code == 400


async def test_tenants_do_not_see_or_remove_each_others_entries(client, db) -> None:
    one, two = await make_caller(db), await make_caller(db)
    await client.post("/v1/suppressions", json={"email": "x@example.org"}, headers=one.headers)
    assert (await client.get("/v1/suppressions", headers=two.headers)).json()["data"] == []
    r = await client.delete("/v1/suppressions/x@example.org", headers=two.headers)
    assert r.status_code == 404


async def test_a_malformed_address_is_422_and_no_key_is_401(client, db) -> None:
    caller = await make_caller(db)
    r = await client.post(
        "/v1/suppressions", json={"email": "not an address"}, headers=caller.headers
    )
    assert r.status_code == 422
    assert (await client.get("/v1/suppressions")).status_code == 401
