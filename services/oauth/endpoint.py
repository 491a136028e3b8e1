"""The token endpoint (RFC 6749 4.1.3 code exchange, 6 refresh) and the address it vouches for.

Outcomes are three: tokens; `GrantRevoked` (invalid_grant: the user revoked consent, the
refresh token expired or was rotated away; only a new consent helps); or
`OAuthEndpointUnavailable` (network, 5xx, 429: retried with backoff, the grant is fine).
No error here quotes a token or the provider's description text.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from services.errors import BadCredentials, ProviderPermanentError
from services.oauth.http import RETRY_FLOOR_S, OAuthEndpointUnavailable, request
from settings import Settings

_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
# Access tokens without `expires_in` are taken to last this long (Google and Microsoft: 1 h).
DEFAULT_LIFETIME_S = 3600


class GrantRevoked(BadCredentials):
    """The provider refused the refresh token (invalid_grant): the account needs a new consent."""

    code = "oauth_grant_revoked"


class TokenRequestRefused(ProviderPermanentError):
    """The provider refused a token request for a reason that is not the grant's."""

    code = "oauth_token_refused"


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Client:
    """What a token request needs of an app."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)


def _parse(body: dict[str, Any]) -> TokenSet:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthEndpointUnavailable("The OAuth token endpoint answered without a token.")
    lifetime = body.get("expires_in")
    try:
        seconds = int(lifetime) if lifetime is not None else DEFAULT_LIFETIME_S
    except (TypeError, ValueError):
        seconds = DEFAULT_LIFETIME_S
    refresh = body.get("refresh_token")
    id_token = body.get("id_token")
    return TokenSet(
        access_token=token,
        expires_at=datetime.now(UTC) + timedelta(seconds=max(seconds, 0)),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
    )


def _retry_after(response: httpx.Response) -> float:
    """The endpoint's Retry-After in seconds (a date form counts as the floor), at least the
    floor: the task's backoff waits at least this long."""
    try:
        given = float(response.headers.get("retry-after", ""))
    except ValueError:
        given = 0.0
    return max(given, RETRY_FLOOR_S)


async def _token_call(client: Client, form: dict[str, str], settings: Settings) -> TokenSet:
    form = {**form, "client_id": client.client_id, "client_secret": client.client_secret}
    response = await request("POST", client.token_url, settings=settings, data=form)
    if response.status_code >= 500 or response.status_code == 429:
        raise OAuthEndpointUnavailable(
            f"The OAuth token endpoint failed (HTTP {response.status_code}); it will be retried.",
            retry_after=_retry_after(response),
        )
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise OAuthEndpointUnavailable("The OAuth token endpoint answered something unreadable.")
    if response.status_code == 200:
        return _parse(body)
    error = str(body.get("error") or "")
    if error == "invalid_grant":
        raise GrantRevoked("The provider refused the grant (invalid_grant): reconnect the account.")
    said = error if _ERROR_CODE.fullmatch(error) else f"HTTP {response.status_code}"
    raise TokenRequestRefused(f"The OAuth token endpoint refused the request ({said}).")


async def refresh(client: Client, refresh_token: str, settings: Settings) -> TokenSet:
    return await _token_call(
        client, {"grant_type": "refresh_token", "refresh_token": refresh_token}, settings
    )


async def exchange_code(
    client: Client, *, code: str, verifier: str, redirect_uri: str, settings: Settings
) -> TokenSet:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect_uri,
    }
    return await _token_call(client, form, settings)


def id_token_claims(id_token: str) -> dict[str, Any]:
    """The payload of a JWT we received straight from the token endpoint.

    Its signature is not checked: the token came over the TLS connection we opened to the
    provider's checked address in answer to our own code (OpenID Connect Core 3.1.3.7 allows
    exactly this in place of validating the signature).
    """
    parts = id_token.split(".")
    if len(parts) < 2 or len(parts[1]) > 64 * 1024:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


async def userinfo_email(url: str, access_token: str, settings: Settings) -> str | None:
    response = await request(
        "GET", url, settings=settings, headers={"Authorization": f"Bearer {access_token}"}
    )
    if response.status_code != 200:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    email = body.get("email") if isinstance(body, dict) else None
    return email if isinstance(email, str) else None
