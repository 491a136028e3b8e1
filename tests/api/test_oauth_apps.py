"""POST/GET/DELETE /v1/oauth/apps: presets, the secret never shown, the destination policy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from database.engine import Database
from database.models import OAuthApp
from tests.api.keys import make_caller

pytestmark = pytest.mark.asyncio

SECRET = "the-client-secret-7f3a"


def _body(provider: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "client_id": "client-1",
        "client_secret": SECRET,
        "allowed_redirect_origins": ["https://app.example.com"],
        **extra,
    }


async def test_google_preset_has_gmail_hosts_and_the_mail_scope(
    client: httpx.AsyncClient, db: Database
) -> None:
    caller = await make_caller(db)
    r = await client.post("/v1/oauth/apps", json=_body("google"), headers=caller.headers)
    assert r.status_code == 201, r.text
    app = r.json()
    assert SECRET not in r.text and "client_secret" not in app
    assert app["imap"] == {"host": "imap.gmail.com", "port": 993, "security": "tls"}
    assert app["smtp"] == {"host": "smtp.gmail.com", "port": 465, "security": "tls"}
    assert "https://mail.google.com/" in app["scopes"]
    assert app["authorize_url"].startswith("https://accounts.google.com/")
    assert app["token_url"] == "https://oauth2.googleapis.com/token"
    async with db.transaction() as s:
        stored = (await s.execute(sa.select(OAuthApp.secret_ciphertext))).scalars().all()
    assert all(SECRET not in c for c in stored)


async def test_microsoft_preset_uses_the_tenant_and_outlook_scopes(
    client: httpx.AsyncClient, db: Database
) -> None:
    caller = await make_caller(db)
    r = await client.post("/v1/oauth/apps", json=_body("microsoft"), headers=caller.headers)
    app = r.json()
    assert app["tenant"] == "common"
    assert app["token_url"] == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert app["imap"] == {"host": "outlook.office365.com", "port": 993, "security": "tls"}
    assert app["smtp"] == {"host": "smtp.office365.com", "port": 587, "security": "starttls"}
    assert app["pop3"] is None
    for scope in (
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    ):
        assert scope in app["scopes"]
    assert "https://outlook.office.com/POP.AccessAsUser.All" not in app["scopes"]

    r = await client.post(
        "/v1/oauth/apps",
        json=_body("microsoft", tenant="contoso.onmicrosoft.com", pop3={}),
        headers=caller.headers,
    )
    app = r.json()
    assert app["authorize_url"] == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    assert "https://outlook.office.com/POP.AccessAsUser.All" in app["scopes"]
    assert app["pop3"] == {"host": "outlook.office365.com", "port": 995, "security": "tls"}


def _generic(url: str) -> dict[str, Any]:
    return _body(
        "generic",
        authorize_url=f"{url}/authorize",
        token_url=f"{url}/token",
        scopes=["mail"],
        imap={"host": "127.0.0.1", "port": 993, "security": "tls"},
        smtp={"host": "127.0.0.1", "port": 465, "security": "tls"},
    )


async def test_generic_url_on_a_private_host_is_refused_unless_listed(
    app: Any, settings: Any, db: Database
) -> None:
    from api.app import create_app

    caller = await make_caller(db)
    strict = create_app(settings.model_copy(update={"allowed_private_oauth_hosts": ""}))
    async with strict.router.lifespan_context(strict):
        transport = httpx.ASGITransport(app=strict)
        async with httpx.AsyncClient(transport=transport, base_url="http://p.test") as c:
            for url in ("https://127.0.0.1:9", "https://169.254.169.254", "https://10.1.2.3"):
                r = await c.post("/v1/oauth/apps", json=_generic(url), headers=caller.headers)
                assert r.status_code == 422, r.text
                assert r.json()["error"]["code"] == "oauth_url_not_allowed"
    # The test settings list loopback (as the local .env does): the same body is accepted.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p.test") as c:
        r = await c.post(
            "/v1/oauth/apps", json=_generic("http://127.0.0.1:9"), headers=caller.headers
        )
        assert r.status_code == 201, r.text


async def test_generic_app_needs_its_urls_and_hosts(
    client: httpx.AsyncClient, db: Database
) -> None:
    caller = await make_caller(db)
    r = await client.post("/v1/oauth/apps", json=_body("generic"), headers=caller.headers)
    assert r.status_code == 422


async def test_apps_are_listed_read_and_deleted_per_tenant(
    client: httpx.AsyncClient, db: Database
) -> None:
    caller, other = await make_caller(db), await make_caller(db)
    created = (
        await client.post("/v1/oauth/apps", json=_body("google"), headers=caller.headers)
    ).json()
    listed = (await client.get("/v1/oauth/apps", headers=caller.headers)).json()["data"]
    assert [a["id"] for a in listed] == [created["id"]]
    assert (
        await client.get(f"/v1/oauth/apps/{created['id']}", headers=other.headers)
    ).status_code == 404
    assert (
        await client.delete(f"/v1/oauth/apps/{created['id']}", headers=other.headers)
    ).status_code == 404
    assert (
        await client.delete(f"/v1/oauth/apps/{created['id']}", headers=caller.headers)
    ).status_code == 204
    assert (
        await client.get(f"/v1/oauth/apps/{created['id']}", headers=caller.headers)
    ).status_code == 404
