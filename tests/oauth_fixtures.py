"""OAuth2 peers for the tests: the local authorization server (tests/oauth_server.py), a
Dovecot whose oauth2 passdb introspects every token with it, and an aiosmtpd that accepts
AUTH XOAUTH2 by asking the same server; plus helpers to make an app and an account."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.imap_fixtures import Dovecot
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer
from tests.peers import free_port
from tests.smtp_fixtures import Handler, SmtpPeer, _authenticator

_ERROR = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}


@dataclass
class XOAuth2Handler(Handler):
    """The SMTP side of Gmail: AUTH XOAUTH2, the token checked by introspection, and on
    failure the base64 JSON error challenge (334) before the 535."""

    introspection_url: str = ""
    logins: int = 0

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        raw = base64.b64decode(args[1]) if len(args) > 1 else b""
        fields = dict(part.split("=", 1) for part in raw.decode().split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                self.introspection_url, data={"token": auth.removeprefix("Bearer ")}
            )
        info = answer.json()
        if info.get("active") and info.get("username") == user:
            self.logins += 1
            return AuthResult(success=True, auth_data=user)
        await server.challenge_auth(json.dumps(_ERROR))  # the client answers an empty line
        return AuthResult(success=False, handled=False)


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthServer]:
    server = OAuthServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=False)
def fresh_oauth(oauth_server: OAuthServer) -> Iterator[OAuthServer]:
    """The server's switches back to normal after the test that flipped them."""
    yield oauth_server
    oauth_server.down = False
    oauth_server.rotate = False
    oauth_server.refresh_delay_s = 0.0
    oauth_server.access_ttl_s = 3600.0
    oauth_server.token_size = 16


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server: OAuthServer) -> Iterator[Dovecot]:
    server = Dovecot(oauth2_introspection_url=f"{oauth_server.url}/introspect").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def xoauth2_smtp(oauth_server: OAuthServer) -> Iterator[SmtpPeer]:
    handler = XOAuth2Handler(introspection_url=f"{oauth_server.url}/introspect")
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield SmtpPeer(controller, handler, port, "none", True, None)
    finally:
        controller.stop()


def generic_app_body(
    server: OAuthServer, dovecot: Dovecot, smtp: SmtpPeer, *, origins: list[str] | None = None
) -> dict[str, Any]:
    """A `generic` app at the local server, mail on the OAuth Dovecot and the XOAUTH2 SMTP."""
    return {
        "provider": "generic",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "allowed_redirect_origins": origins or ["https://app.example.com"],
        "authorize_url": f"{server.url}/authorize",
        "token_url": f"{server.url}/token",
        "userinfo_url": f"{server.url}/userinfo",
        "scopes": ["openid", "email", "mail"],
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "security": "none"},
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none"},
        "pop3": {"host": "127.0.0.1", "port": dovecot.pop3_port, "security": "none"},
    }


def new_email() -> str:
    return f"o{uuid.uuid4().hex[:10]}@example.com"


async def create_app(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> str:
    r = await client.post("/v1/oauth/apps", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def create_oauth_account(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    server: OAuthServer,
    app_id: str,
    *,
    provider: str = "imap",
    email: str | None = None,
    ttl_s: float = 3600.0,
    with_access: bool = True,
) -> tuple[str, str]:
    """(account id, email) of an account made with direct tokens the server issued."""
    import datetime as dt

    email = email or new_email()
    access, refresh, expires = server.issue(email, ttl_s=ttl_s)
    oauth2: dict[str, Any] = {"app_id": app_id, "refresh_token": refresh}
    if with_access:
        oauth2["access_token"] = access
        oauth2["expires_at"] = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat()
    r = await client.post(
        "/v1/accounts",
        json={"provider": provider, "email": email, "oauth2": oauth2},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), email
