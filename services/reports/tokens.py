"""Signed tokens postroom puts in mail: the VERP return path of one recipient of one send,
and the one-click unsubscribe link of one recipient of one tenant.

Both are HMAC-SHA256 over what they name, with a key derived from the server's credential
keys (every key verifies, so a rotation does not break links already in mailboxes). Neither
holds anything secret: the VERP token names a send and a recipient index, the unsubscribe
token a tenant and an address the recipient already knows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid

from settings import Settings

VERP_PREFIX = "bounces+"
_VERP_MAC = 6
_UNSUB_MAC = 16
MAX_UNSUB_TOKEN = 800


def _keys(settings: Settings, purpose: bytes) -> list[bytes]:
    material = settings.credential_key_list() or [settings.database_url]
    return [hmac.new(m.encode(), purpose, hashlib.sha256).digest() for m in material]


def _mac(key: bytes, data: bytes, size: int) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:size]


def _recipient_tag(email: str) -> bytes:
    return hashlib.sha256(email.strip().lower().encode()).digest()[:4]


def verp_address(settings: Settings, *, outbound_id: uuid.UUID, recipient: str, domain: str) -> str:
    """`bounces+<token>@domain`: the return path of `recipient` in send `outbound_id`. The
    token names the recipient by a short hash, so it does not depend on recipient order."""
    body = outbound_id.bytes + _recipient_tag(recipient)
    mac = _mac(_keys(settings, b"postroom verp v1")[0], body, _VERP_MAC)
    token = base64.b32encode(body + mac).decode().rstrip("=").lower()
    return f"{VERP_PREFIX}{token}@{domain}"


def read_verp(settings: Settings, address: str) -> tuple[uuid.UUID, bytes] | None:
    """(send id, recipient tag) of a VERP address we made; None for anything else."""
    local = address.partition("@")[0].lower()
    if not local.startswith(VERP_PREFIX) or len(local) > 64:
        return None
    token = local[len(VERP_PREFIX) :].upper()
    try:
        raw = base64.b32decode(token + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 + 4 + _VERP_MAC:
        return None
    body, mac = raw[:20], raw[20:]
    for key in _keys(settings, b"postroom verp v1"):
        if hmac.compare_digest(_mac(key, body, _VERP_MAC), mac):
            return uuid.UUID(bytes=body[:16]), body[16:]
    return None


def is_recipient(tag: bytes, email: str) -> bool:
    """Whether a VERP recipient tag names this address."""
    return hmac.compare_digest(_recipient_tag(email), tag)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsubscribe_token(settings: Settings, *, tenant_id: uuid.UUID, email: str) -> str:
    """The token of `/u/{token}`: binds the tenant and the (lowercased) recipient."""
    body = tenant_id.bytes + email.strip().lower().encode()
    mac = _mac(_keys(settings, b"postroom unsubscribe v1")[0], body, _UNSUB_MAC)
    return f"{_b64(body)}.{_b64(mac)}"


def read_unsubscribe(settings: Settings, token: str) -> tuple[uuid.UUID, str] | None:
    """(tenant id, email) of a token we made; None for anything else."""
    if len(token) > MAX_UNSUB_TOKEN or token.count(".") != 1:
        return None
    body_part, mac_part = token.split(".")
    try:
        body = base64.urlsafe_b64decode(body_part + "=" * (-len(body_part) % 4))
        mac = base64.urlsafe_b64decode(mac_part + "=" * (-len(mac_part) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(body) <= 16 or len(mac) != _UNSUB_MAC:
        return None
    for key in _keys(settings, b"postroom unsubscribe v1"):
        if hmac.compare_digest(_mac(key, body, _UNSUB_MAC), mac):
            try:
                return uuid.UUID(bytes=body[:16]), body[16:].decode()
            except UnicodeDecodeError:
                return None
    return None
