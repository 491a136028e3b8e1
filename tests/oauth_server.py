"""A local OAuth2 authorization server for the tests: what Google's and Microsoft's token
services do, over real HTTP, plus the introspection endpoint Dovecot asks (TESTING.md).

Hand-written (Starlette + uvicorn in a thread), not Authlib's server: what the tests need of
it is mostly what a library server exists to prevent: answering 503 on demand, holding a
refresh for a while so two refreshers overlap, counting every refresh that reaches it,
expiring or revoking tokens from the test, rotating refresh tokens or not. Authlib's
AuthorizationServer also needs a framework adapter (Flask or Django; neither is in this
project) and its own model classes for clients, codes and tokens. The protocol parts it does
implement: code + PKCE S256 (RFC 7636 4.6), single-use codes, refresh (RFC 6749 6) with
optional rotation, `invalid_grant` for a dead grant, and RFC 7662 introspection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.peers import free_port, wait_port

CLIENT_ID, CLIENT_SECRET = "test-client", "test-client-secret"


@dataclass
class Grant:
    email: str
    refresh_token: str
    active: bool = True


@dataclass
class Access:
    email: str
    expires_at: float
    grant: Grant


@dataclass
class OAuthServer:
    """State is plain Python shared with the test thread; the test flips the switches."""

    port: int = field(default_factory=free_port)
    access_ttl_s: float = 3600.0
    rotate: bool = False
    down: bool = False  # every token request answers 503
    refresh_delay_s: float = 0.0
    default_email: str = "owner@example.com"
    token_size: int = 16  # random bytes per access token (Microsoft's are over 1,000 chars)
    refreshes: int = 0  # refresh requests that reached the endpoint (down or not)
    exchanges: int = 0
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, Access] = field(default_factory=dict)
    introspections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what a test does -------------------------------------------------------------------
    def issue(self, email: str, *, ttl_s: float | None = None) -> tuple[str, str, float]:
        """A grant as a tenant's own consent screen would have got it: (access, refresh, exp)."""
        grant = Grant(email, "rt-" + secrets.token_urlsafe(16))
        self.grants[grant.refresh_token] = grant
        access, expires = self._access(grant, ttl_s)
        return access, grant.refresh_token, expires

    def expire_all(self) -> None:
        for token in self.tokens.values():
            token.expires_at = 0

    def revoke(self, email: str) -> None:
        for grant in self.grants.values():
            if grant.email == email:
                grant.active = False

    def active_refresh_tokens(self, email: str) -> list[str]:
        return [g.refresh_token for g in self.grants.values() if g.email == email and g.active]

    # -- protocol ---------------------------------------------------------------------------
    def _access(self, grant: Grant, ttl_s: float | None = None) -> tuple[str, float]:
        token = "at-" + secrets.token_urlsafe(self.token_size)
        expires = time.time() + (self.access_ttl_s if ttl_s is None else ttl_s)
        self.tokens[token] = Access(grant.email, expires, grant)
        return token, expires

    def _answer(self, grant: Grant, *, id_token: bool = False) -> dict[str, Any]:
        token, expires = self._access(grant)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(expires - time.time()),
        }
        if id_token:
            body["id_token"] = _jwt(
                {"sub": grant.email, "email": grant.email, "email_verified": True}
            )
        return body

    def valid(self, token: str) -> str | None:
        access = self.tokens.get(token)
        if access is None or access.expires_at < time.time() or not access.grant.active:
            return None
        return access.email

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = "code-" + secrets.token_urlsafe(12)
        self.codes[code] = {
            "redirect_uri": q["redirect_uri"],
            "challenge": q["code_challenge"],
            "email": q.get("login_hint") or self.default_email,
            "used": False,
        }
        # The user approves at once; the browser goes back with the code and the state.
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        return RedirectResponse(target, status_code=302)

    async def token(self, request: Request) -> Response:
        form = await _form(request)
        if form.get("grant_type") == "refresh_token":
            self.refreshes += 1
        if self.down:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") == "authorization_code":
            return self._exchange(form)
        if form.get("grant_type") == "refresh_token":
            if self.refresh_delay_s:
                await asyncio.sleep(self.refresh_delay_s)
            grant = self.grants.get(str(form.get("refresh_token")))
            if grant is None or not grant.active:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            if not self.rotate:
                return JSONResponse(self._answer(grant))
            grant.active = False  # the old refresh token is spent
            new = Grant(grant.email, "rt-" + secrets.token_urlsafe(16))
            self.grants[new.refresh_token] = new
            body = self._answer(new)
            body["refresh_token"] = new.refresh_token
            return JSONResponse(body)
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    def _exchange(self, form: Any) -> Response:
        self.exchanges += 1
        code = self.codes.get(str(form.get("code")))
        verifier = str(form.get("code_verifier") or "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            code is None
            or code["used"]
            or code["redirect_uri"] != form.get("redirect_uri")
            or challenge.rstrip(b"=").decode() != code["challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        code["used"] = True
        grant = Grant(code["email"], "rt-" + secrets.token_urlsafe(16))
        self.grants[grant.refresh_token] = grant
        body = self._answer(grant, id_token=True)
        body["refresh_token"] = grant.refresh_token
        return JSONResponse(body)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662, as Dovecot's oauth2 passdb asks it (introspection_mode = post)."""
        self.introspections += 1
        form = await _form(request)
        email = self.valid(str(form.get("token") or ""))
        if email is None:
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, "username": email})

    async def userinfo(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        email = self.valid(auth.removeprefix("Bearer "))
        if email is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"email": email})

    # -- running ----------------------------------------------------------------------------
    def start(self) -> OAuthServer:
        app = Starlette(
            routes=[
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/introspect", self.introspect, methods=["POST"]),
                Route("/userinfo", self.userinfo),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


def _jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    # Signed with a key nobody checks: postroom reads id tokens only from its own TLS call.
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{part({'sig': 1})}"


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (python-multipart is not a dependency)."""
    return dict(parse_qsl((await request.body()).decode()))
