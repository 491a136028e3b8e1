"""Bad input as a hostile client sends it: oversized, deeply nested, NUL bytes, wrong methods,
unknown routes, broken JSON. Every answer is the error envelope, never a 500 or a traceback."""

from __future__ import annotations

import json

import pytest

from tests.api.keys import imap_account, make_account, make_caller


def assert_envelope(r, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in r.text


async def test_oversized_body_is_413(client, db, settings) -> None:
    caller = await make_caller(db)
    big = b'{"provider": "imap", "email": "' + b"a" * (settings.api_max_body_bytes + 10) + b'"}'
    r = await client.post(
        "/v1/accounts", content=big, headers={**caller.headers, "content-type": "application/json"}
    )
    assert_envelope(r, 413, "payload_too_large")


async def test_oversized_body_without_content_length_is_413(client, db, settings) -> None:
    caller = await make_caller(db)

    async def chunks():
        for _ in range(settings.api_max_body_bytes // 65536 + 2):
            yield b" " * 65536

    r = await client.post(
        "/v1/messages/send",
        content=chunks(),
        headers={**caller.headers, "content-type": "application/json"},
    )
    assert_envelope(r, 413, "payload_too_large")


@pytest.mark.parametrize("depth", [40, 5000, 200_000])
async def test_deeply_nested_json_is_400(client, db, depth) -> None:
    caller = await make_caller(db)
    nested = "[" * depth + "]" * depth
    body = '{"message_ids": ' + nested + "}"
    r = await client.post(
        "/v1/messages/delete",
        content=body,
        headers={**caller.headers, "content-type": "application/json"},
    )
    assert_envelope(r, 400, "bad_request")


async def test_brackets_inside_strings_do_not_count_as_nesting(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    body = {"account_id": str(account), "to": [{"email": "a@b.co"}], "text": "[" * 500}
    r = await client.post("/v1/messages/send", json=body, headers=caller.headers)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("raw", [b"{", b"not json", b"\x00", b"\xff\xfe", b'{"a": }'])
async def test_malformed_json_is_400(client, db, raw) -> None:
    caller = await make_caller(db)
    r = await client.post(
        "/v1/accounts", content=raw, headers={**caller.headers, "content-type": "application/json"}
    )
    assert_envelope(r, 400, "bad_request")


async def test_nul_characters_are_refused_not_500(client, db) -> None:
    caller = await make_caller(db)
    r = await client.get("/v1/messages", params={"folder": "IN\x00BOX"}, headers=caller.headers)
    assert_envelope(r, 422, "validation_error")
    r = await client.get("/v1/tasks/abc%00def", headers=caller.headers)
    assert_envelope(r, 422, "validation_error")
    r = await client.post(
        "/v1/accounts",
        content=json.dumps(imap_account("a\x00@b.co")),
        headers={**caller.headers, "content-type": "application/json"},
    )
    assert_envelope(r, 422, "validation_error")


async def test_lone_surrogates_are_refused_not_500(client, db) -> None:
    caller = await make_caller(db)
    body = json.dumps({"provider": "nylas", "email": "a@b.co", "nylas": {"grant_id": "\ud800x"}})
    r = await client.post(
        "/v1/accounts", content=body, headers={**caller.headers, "content-type": "application/json"}
    )
    assert r.status_code == 422, r.text


async def test_validation_error_has_details(client, db) -> None:
    caller = await make_caller(db)
    r = await client.get(
        "/v1/messages", params={"limit": 0, "account_id": "nope"}, headers=caller.headers
    )
    assert r.status_code == 422
    details = r.json()["error"]["details"]
    assert {tuple(d["loc"]) for d in details} >= {("query", "limit"), ("query", "account_id")}


async def test_unknown_route_and_wrong_method(client, db) -> None:
    caller = await make_caller(db)
    assert_envelope(await client.get("/v1/nothing-here", headers=caller.headers), 404, "not_found")
    r = await client.get("/v1/messages/send", headers=caller.headers)
    assert_envelope(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = await client.put(f"/v1/accounts/{await make_account(db, caller)}", headers=caller.headers)
    assert_envelope(r, 405)
    assert set(r.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}


async def test_unknown_fields_and_wrong_types_are_422(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    r = await client.post(f"/v1/accounts/{account}/sync", json={"full": 0}, headers=caller.headers)
    assert_envelope(r, 422, "validation_error")
    r = await client.post(
        f"/v1/accounts/{account}/sync", json={"surprise": 1}, headers=caller.headers
    )
    assert_envelope(r, 422, "validation_error")
    r = await client.post(
        "/v1/messages/delete", json={"message_ids": ["x"]}, headers=caller.headers
    )
    assert_envelope(r, 422, "validation_error")


async def test_openapi_documents_the_v1_api(client) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    for path in (
        "/v1/accounts",
        "/v1/messages",
        "/v1/messages/send",
        "/v1/tasks/{task_id}",
        "/v1/events/{event_id}/replay",
        "/v1/workflows/{name}",
    ):
        assert path in spec["paths"], path
    send = spec["paths"]["/v1/messages/send"]["post"]
    assert "202" in send["responses"] and "409" in send["responses"] and "413" in send["responses"]
    assert spec["components"]["securitySchemes"]
    assert (await client.get("/docs")).status_code == 200
