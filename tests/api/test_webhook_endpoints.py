"""/v1/webhooks: the tenant's own endpoints (API.md "Outbound events")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.keys import make_caller

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
async def strict_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An API whose operator allows no private webhook host (production's default)."""
    from api.app import create_app

    app = create_app(settings.model_copy(update={"allowed_private_webhook_hosts": ""}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            yield c


async def test_secret_is_shown_on_create_only(client: Any, db: Any) -> None:
    caller = await make_caller(db)
    r = await client.post(
        "/v1/webhooks",
        json={"url": URL, "event_types": ["message.sent", "message.created"], "description": "d"},
        headers=caller.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {
        "id",
        "url",
        "event_types",
        "description",
        "status",
        "secret",
        "created_at",
    }
    assert body["secret"].startswith("whsec_") and len(body["secret"]) >= 6 + 32
    assert body["status"] == "active" and body["event_types"] == ["message.created", "message.sent"]
    got = (await client.get(f"/v1/webhooks/{body['id']}", headers=caller.headers)).json()
    assert "secret" not in got and got["url"] == URL
    listed = (await client.get("/v1/webhooks", headers=caller.headers)).json()["data"]
    assert [e["id"] for e in listed] == [body["id"]] and "secret" not in listed[0]


async def test_secret_is_stored_encrypted(client: Any, db: Any) -> None:
    import sqlalchemy as sa

    caller = await make_caller(db)
    r = await client.post("/v1/webhooks", json={"url": URL}, headers=caller.headers)
    secret = r.json()["secret"]
    async with db.transaction() as s:
        stored = (
            await s.execute(
                sa.text("SELECT secret FROM webhook_endpoint WHERE id = :i"), {"i": r.json()["id"]}
            )
        ).scalar_one()
    assert secret not in stored and secret.removeprefix("whsec_") not in stored


async def test_patch_delete_and_other_tenants(client: Any, db: Any) -> None:
    owner, other = await make_caller(db), await make_caller(db)
    ep = (await client.post("/v1/webhooks", json={"url": URL}, headers=owner.headers)).json()
    path = f"/v1/webhooks/{ep['id']}"
    assert (await client.get(path, headers=other.headers)).status_code == 404
    assert (await client.delete(path, headers=other.headers)).status_code == 404
    r = await client.patch(
        path, json={"event_types": ["job.failed"], "status": "disabled"}, headers=owner.headers
    )
    assert r.status_code == 200
    assert r.json()["event_types"] == ["job.failed"] and r.json()["status"] == "disabled"
    r = await client.patch(
        path, json={"event_types": None, "status": "active"}, headers=owner.headers
    )
    assert r.json()["event_types"] is None and r.json()["status"] == "active"
    r = await client.post(f"{path}/rotate-secret", headers=other.headers)
    assert r.status_code == 404
    assert (await client.delete(path, headers=owner.headers)).status_code == 204
    assert (await client.get(path, headers=owner.headers)).status_code == 404


async def test_unknown_event_type_is_refused(client: Any, db: Any) -> None:
    caller = await make_caller(db)
    r = await client.post(
        "/v1/webhooks",
        json={"url": URL, "event_types": ["message.exploded"]},
        headers=caller.headers,
    )
    assert r.status_code == 422


async def test_twenty_endpoints_per_tenant(client: Any, db: Any) -> None:
    caller = await make_caller(db)
    for i in range(20):
        r = await client.post("/v1/webhooks", json={"url": f"{URL}{i}"}, headers=caller.headers)
        assert r.status_code == 201
    r = await client.post("/v1/webhooks", json={"url": URL}, headers=caller.headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "endpoint_limit_reached"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://2130706433/hook",
        "http://8.8.8.8/hook",  # public, but not https
        "ftp://8.8.8.8/hook",
        "https://user:pw@8.8.8.8/hook",
    ],
)
async def test_destination_policy(strict_client: Any, db: Any, url: str) -> None:
    caller = await make_caller(db)
    r = await strict_client.post("/v1/webhooks", json={"url": url}, headers=caller.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "webhook_url_not_allowed"


async def test_public_https_and_allowed_private_http_are_accepted(
    client: Any, strict_client: Any, db: Any
) -> None:
    caller = await make_caller(db)
    r = await strict_client.post(
        "/v1/webhooks", json={"url": "https://8.8.8.8/hook"}, headers=caller.headers
    )
    assert r.status_code == 201
    # The test env allows loopback: there, http:// is fine too.
    r = await client.post("/v1/webhooks", json={"url": URL}, headers=caller.headers)
    assert r.status_code == 201
    ep = r.json()["id"]
    r = await strict_client.patch(
        f"/v1/webhooks/{ep}", json={"url": "https://10.0.0.1/x"}, headers=caller.headers
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_url_not_allowed"


async def test_deliveries_of_an_unknown_endpoint_are_404(client: Any, db: Any) -> None:
    caller = await make_caller(db)
    missing = "00000000-0000-0000-0000-000000000000"
    for method, path, body in (
        ("GET", f"/v1/webhooks/{missing}/deliveries", None),
        ("POST", f"/v1/webhooks/{missing}/test", None),
        ("POST", f"/v1/webhooks/{missing}/recover", {"since": "2026-01-01T00:00:00Z"}),
        ("POST", f"/v1/webhooks/{missing}/deliveries/{missing}/resend", None),
    ):
        r = await client.request(method, path, json=body, headers=caller.headers)
        assert r.status_code == 404, (path, r.text)
