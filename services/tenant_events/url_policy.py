"""Where a tenant's webhook URL may point: the destination policy of mail hosts
(services/destination.py), with POSTROOM_ALLOWED_PRIVATE_WEBHOOK_HOSTS as its allow list.

`https://` only, to hosts whose every address is public; a host the allow list names (or
whose addresses it covers) may also be `http://`. The delivery process checks again before
it connects and connects to the addresses it checked (services/tenant_events/http.py).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from services import destination
from services.errors import ProviderTemporaryError, ValidationFailed

MAX_URL_CHARS = 2048


class WebhookUrlNotAllowed(ValidationFailed):
    """The webhook URL is not allowed: https:// to a public host, unless the operator allows it."""

    code = "webhook_url_not_allowed"


def split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL; WebhookUrlNotAllowed otherwise."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookUrlNotAllowed(f"The URL is longer than {MAX_URL_CHARS} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlNotAllowed("The URL cannot be read.") from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise WebhookUrlNotAllowed("The URL must be an absolute https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlNotAllowed("The URL must not carry a user name or password.")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _all_allowed(host: str, addresses: tuple[str, ...], allowed: str) -> bool:
    allow = destination.AllowList.parse(allowed)
    return bool(addresses) and all(allow.allows(host, ipaddress.ip_address(a)) for a in addresses)


async def check(url: str, *, allowed: str) -> destination.Destination:
    """The checked destination of `url`, or WebhookUrlNotAllowed (422). A name that does not
    resolve raises ProviderTemporaryError: the caller decides whether that is fatal."""
    scheme, host, port = split(url)
    try:
        dest = await destination.resolve(host, port, role="webhook", allowed=allowed)
    except destination.MailHostNotAllowed:
        raise WebhookUrlNotAllowed(
            "The webhook host resolves to a non-public address; endpoints must be public "
            "unless the operator allows the host (POSTROOM_ALLOWED_PRIVATE_WEBHOOK_HOSTS)."
        ) from None
    if scheme == "http" and not _all_allowed(host, dest.addresses, allowed):
        raise WebhookUrlNotAllowed("The URL must use https://.")
    return dest


async def check_configured(url: str, *, allowed: str) -> None:
    """The check when an endpoint is created or changed. A name that does not resolve yet is
    accepted over https, as for mail hosts: the delivery process checks before every connect."""
    scheme, _, _ = split(url)
    try:
        await check(url, allowed=allowed)
    except ProviderTemporaryError:
        if scheme != "https":
            raise WebhookUrlNotAllowed("The URL must use https://.") from None
