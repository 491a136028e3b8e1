"""Verifying an OAuth2 account body before it is saved: log in with the grant it gives.

The access token given is used while it is valid; otherwise the refresh token is spent once
(no account exists yet, so nothing is marked for re-authorisation). When the provider rotates
the refresh token, the new one replaces the body's, so `POST /v1/accounts?verify=true` stores
the token that is still valid.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from database.models import OAuthApp
from services.accounts.credentials import oauth_servers
from services.oauth import endpoint
from services.oauth.apps import client_of
from settings import Settings


class BodyTokens:
    """A TokenSource over the `oauth2` part of a create body (at most one refresh)."""

    def __init__(self, settings: Settings, app: OAuthApp, oauth2: dict[str, Any]) -> None:
        self.settings = settings
        self.client = client_of(settings, app)
        self.oauth2 = oauth2
        self._lock = asyncio.Lock()
        self._refreshed: str | None = None

    def __repr__(self) -> str:
        return "BodyTokens()"

    def _given(self) -> str | None:
        token = self.oauth2.get("access_token")
        expires = self.oauth2.get("expires_at")
        if not token:
            return None
        if isinstance(expires, str):
            when = datetime.fromisoformat(expires)
            if when - datetime.now(UTC) < timedelta(seconds=30):
                return None
        return str(token)

    async def access_token(self, *, refused: str | None = None) -> str:
        async with self._lock:
            if self._refreshed is not None and self._refreshed != refused:
                return self._refreshed
            given = self._given()
            if given is not None and given != refused and self._refreshed is None:
                return given
            tokens = await endpoint.refresh(
                self.client, str(self.oauth2["refresh_token"]), self.settings
            )
            if tokens.refresh_token:
                self.oauth2["refresh_token"] = tokens.refresh_token
            self.oauth2["access_token"] = tokens.access_token
            self.oauth2["expires_at"] = tokens.expires_at.isoformat()
            self._refreshed = tokens.access_token
            return tokens.access_token


def servers_for(settings: Settings, app: OAuthApp, body: dict[str, Any]) -> dict[str, Any]:
    """The body's servers (from the app), each logging in with the body's grant."""
    tokens = BodyTokens(settings, app, body["oauth2"])
    servers = oauth_servers(app, inbound=body["provider"], email=body["email"])
    return {role: {**server, "oauth": tokens} for role, server in servers.items()}
