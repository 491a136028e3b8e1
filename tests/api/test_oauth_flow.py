"""The hosted connect flow, driven as a browser would: authorize URL -> the provider's page
(the local OAuth2 server approves at once) -> /oauth/callback -> the tenant's redirect_to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from database.engine import Database
from tests.api.keys import make_caller
from tests.oauth_fixtures import create_app, generic_app_body, new_email

pytestmark = pytest.mark.asyncio
TENANT_PAGE = "https://app.example.com/connected"


@pytest.fixture
async def browser(app: Any) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    """A client that follows redirects: postroom in-process, the provider over real HTTP,
    and the tenant's page as a handler that records the URLs it was sent to."""
    landed: list[str] = []

    def tenant_page(request: httpx.Request) -> httpx.Response:
        landed.append(str(request.url))
        return httpx.Response(200, text="connected")

    mounts: dict[str, httpx.AsyncBaseTransport] = {
        "http://postroom.test": httpx.ASGITransport(app=app),
        "https://app.example.com": httpx.MockTransport(tenant_page),
    }
    async with httpx.AsyncClient(mounts=mounts, follow_redirects=True) as c:
        yield c, landed


@pytest.fixture
async def flow(
    client: httpx.AsyncClient, db: Database, fresh_oauth: Any, oauth_dovecot: Any, xoauth2_smtp: Any
) -> dict[str, Any]:
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(fresh_oauth, oauth_dovecot, xoauth2_smtp)
    )
    return {"caller": caller, "app_id": app_id, "server": fresh_oauth}


async def _authorize(
    client: httpx.AsyncClient, flow: dict[str, Any], **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/oauth/apps/{flow['app_id']}/authorize",
        json={"redirect_to": TENANT_PAGE, **body},
        headers=flow["caller"].headers,
    )


async def test_the_hosted_flow_connects_the_mailbox_and_comes_back_with_its_id(
    client: httpx.AsyncClient, browser: Any, flow: dict[str, Any]
) -> None:
    email = new_email()
    r = await _authorize(client, flow, email=email)
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["login_hint"] == [email]
    assert query["redirect_uri"] == ["http://postroom.test/oauth/callback"]

    c, landed = browser
    final = await c.get(url)
    assert final.status_code == 200 and len(landed) == 1
    assert [h.status_code for h in final.history] == [302, 303]
    back = parse_qs(urlsplit(landed[0]).query)
    account = (
        await client.get(f"/v1/accounts/{back['account_id'][0]}", headers=flow["caller"].headers)
    ).json()
    assert account["email"] == email and account["status"] == "active"
    assert account["provider"] == "imap"

    # The same address again (a reconnect) updates that account instead of adding one.
    final = await c.get((await _authorize(client, flow, email=email)).json()["url"])
    assert parse_qs(urlsplit(landed[1]).query)["account_id"] == back["account_id"]
    listed = (await client.get("/v1/accounts", headers=flow["caller"].headers)).json()["data"]
    assert [a["id"] for a in listed] == back["account_id"]


async def test_a_replayed_state_and_code_are_refused(
    client: httpx.AsyncClient, app: Any, flow: dict[str, Any]
) -> None:
    url = (await _authorize(client, flow)).json()["url"]
    async with httpx.AsyncClient() as provider:
        callback = (await provider.get(url)).headers["location"]
    path = callback.removeprefix("http://postroom.test")
    first = await client.get(path)
    assert first.status_code == 303 and "account_id=" in first.headers["location"]
    exchanges = flow["server"].exchanges
    again = await client.get(path)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "oauth_state_invalid"
    assert flow["server"].exchanges == exchanges  # the code never went to the provider again


async def test_a_forged_or_foreign_state_is_refused(
    client: httpx.AsyncClient, flow: dict[str, Any]
) -> None:
    url = (await _authorize(client, flow)).json()["url"]
    state = parse_qs(urlsplit(url).query)["state"][0]
    body, mac = state.split(".")
    for forged in (f"{body}.{mac[:-2]}AA", f"{body[:-2]}AA.{mac}", "", "x.y"):
        r = await client.get("/oauth/callback", params={"code": "c", "state": forged})
        assert r.status_code == 400, forged


async def test_redirect_to_outside_the_allowed_origins_is_refused(
    client: httpx.AsyncClient, flow: dict[str, Any]
) -> None:
    for target in (
        "https://evil.example.net/connected",
        "https://app.example.com.evil.example.net/",
        "http://app.example.com/connected",
        "https://app.example.com:8443/connected",
        "https://user@app.example.com/connected",
    ):
        r = await _authorize(client, flow, redirect_to=target)
        assert r.status_code == 422, target
        assert r.json()["error"]["code"] == "redirect_not_allowed"


async def test_a_denied_consent_comes_back_as_an_error(
    client: httpx.AsyncClient, flow: dict[str, Any]
) -> None:
    url = (await _authorize(client, flow)).json()["url"]
    state = parse_qs(urlsplit(url).query)["state"][0]
    r = await client.get("/oauth/callback", params={"error": "access_denied", "state": state})
    assert r.status_code == 303
    assert r.headers["location"] == f"{TENANT_PAGE}?error=access_denied"


async def test_the_redirect_uri_starts_with_the_public_url_when_set(
    settings: Any, db: Database, flow: dict[str, Any]
) -> None:
    from api.app import create_app

    public = create_app(settings.model_copy(update={"public_url": "https://mail.example.org"}))
    async with public.router.lifespan_context(public):
        transport = httpx.ASGITransport(app=public)
        async with httpx.AsyncClient(transport=transport, base_url="http://internal:8000") as c:
            r = await _authorize(c, flow)
    query = parse_qs(urlsplit(r.json()["url"]).query)
    assert query["redirect_uri"] == ["https://mail.example.org/oauth/callback"]


async def test_another_tenants_app_cannot_be_authorized(
    client: httpx.AsyncClient, db: Database, flow: dict[str, Any]
) -> None:
    other = await make_caller(db)
    r = await client.post(
        f"/v1/oauth/apps/{flow['app_id']}/authorize",
        json={"redirect_to": TENANT_PAGE},
        headers=other.headers,
    )
    assert r.status_code == 404
