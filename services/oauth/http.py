"""Calls to an OAuth provider (token and userinfo endpoints), pinned to the checked address.

The URL's host goes through the destination policy (services/destination.py) with
POSTROOM_ALLOWED_PRIVATE_OAUTH_HOSTS, and the request is sent to the address that was checked
(the name stays the Host header and the TLS server name), so a DNS answer that changes between
the check and the connection cannot steer a token request to an internal address. Redirects
are not followed. A client per call: token calls are rare (one per account per hour), and a
worker process's event loops come and go.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx

from services import destination
from services.errors import ProviderTemporaryError, ValidationFailed
from settings import Settings

ROLE = "OAuth"
# The least wait before a task retries after the token endpoint failed: with full-jitter
# backoff alone, a sync's 5 retries can all fall inside one minute of a provider outage;
# with this floor they span over a minute (the task policy caps it at POSTROOM_RETRY_CAP_S).
RETRY_FLOOR_S = 15.0


class OAuthUrlNotAllowed(ValidationFailed):
    """An OAuth URL's host is not a public address and is not on the allow list."""

    code = "oauth_url_not_allowed"


class OAuthEndpointUnavailable(ProviderTemporaryError):
    """The provider's token endpoint could not be reached or failed (5xx, 429): retried."""

    code = "oauth_endpoint_unavailable"


def _parts(url: str, settings: Settings) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise OAuthUrlNotAllowed("The OAuth URL cannot be read.") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise OAuthUrlNotAllowed("OAuth URLs must be https:// URLs.")
    if parsed.scheme == "http" and not _listed(parsed.host, settings):
        # Plain http only to a host the operator listed (a local test server).
        raise OAuthUrlNotAllowed("OAuth URLs must be https:// URLs.")
    return parsed


def _listed(host: str, settings: Settings) -> bool:
    """The host itself (a name or an address) is on POSTROOM_ALLOWED_PRIVATE_OAUTH_HOSTS."""
    allow = destination.AllowList.parse(settings.allowed_private_oauth_hosts)
    bare = host.strip().strip("[]").rstrip(".").lower()
    try:
        return allow.allows(bare, ipaddress.ip_address(bare))
    except ValueError:
        return bare in allow.names


async def resolve(url: str, settings: Settings) -> tuple[httpx.URL, destination.Destination]:
    parsed = _parts(url, settings)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        dest = await destination.resolve(
            parsed.host, port, role=ROLE, allowed=settings.allowed_private_oauth_hosts
        )
    except destination.MailHostNotAllowed:
        raise OAuthUrlNotAllowed(
            "The OAuth URL's host is not allowed: it resolves to a non-public address "
            "(POSTROOM_ALLOWED_PRIVATE_OAUTH_HOSTS lists the ones allowed)."
        ) from None
    return parsed, dest


async def check_url(url: str, settings: Settings) -> None:
    """The check made when an app is created (422 oauth_url_not_allowed); a name that does not
    resolve yet is accepted, as for mail hosts: every call checks again."""
    try:
        await resolve(url, settings)
    except ProviderTemporaryError:
        _parts(url, settings)


async def request(
    method: str,
    url: str,
    *,
    settings: Settings,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to the checked address; transport failures are OAuthEndpointUnavailable."""
    try:
        parsed, dest = await resolve(url, settings)
    except OAuthUrlNotAllowed:
        raise
    except ProviderTemporaryError:
        raise OAuthEndpointUnavailable(
            "The OAuth provider's host name did not resolve.", retry_after=RETRY_FLOOR_S
        ) from None
    sent = {"Host": parsed.netloc.decode("ascii"), "Accept": "application/json", **(headers or {})}
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = parsed.host
    last = "the connection failed"
    async with httpx.AsyncClient(
        timeout=settings.oauth_http_timeout_s, follow_redirects=False, trust_env=False
    ) as client:
        for address in dest.addresses:
            target = parsed.copy_with(host=address)
            try:
                return await client.request(
                    method, target, data=data, headers=sent, extensions=extensions
                )
            except httpx.TransportError as exc:
                last = destination.failure_kind(exc)
    raise OAuthEndpointUnavailable(
        f"The OAuth provider could not be reached: {last}.", retry_after=RETRY_FLOOR_S
    )
