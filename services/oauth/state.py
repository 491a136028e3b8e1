"""The hosted flow's `state`: signed, bound to tenant and app, 10 minutes, and the PKCE verifier.

`state` = base64url(JSON {n: nonce, t: tenant, a: app, e: expiry}) "." base64url(HMAC-SHA256).
The key is derived from POSTROOM_CREDENTIAL_KEYS (any configured key verifies, the first
signs), never the key itself. The PKCE code_verifier (RFC 7636) is derived from the nonce with
the same key, so it is never stored nor shown to the browser; single use is the oauth_state
row's `used_at` (services/oauth/flow.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

import orjson

from settings import Settings

STATE_TTL_S = 600
_MAX_LEN = 1024


@dataclass(frozen=True)
class StateClaims:
    nonce: uuid.UUID
    tenant_id: uuid.UUID
    app_id: uuid.UUID
    key: bytes  # the key that verified it: the verifier is derived with the same one


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _keys(settings: Settings) -> list[bytes]:
    material = settings.credential_key_list() or [settings.database_url]
    return [
        hmac.new(m.encode(), b"postroom oauth state v1", hashlib.sha256).digest() for m in material
    ]


def sign(settings: Settings, *, nonce: uuid.UUID, tenant_id: uuid.UUID, app_id: uuid.UUID) -> str:
    body = orjson.dumps(
        {
            "n": str(nonce),
            "t": str(tenant_id),
            "a": str(app_id),
            "e": int(time.time()) + STATE_TTL_S,
        }
    )
    mac = hmac.new(_keys(settings)[0], body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify(settings: Settings, state: str) -> StateClaims | None:
    """The claims of a state we signed that has not expired; None otherwise."""
    if not state or len(state) > _MAX_LEN or state.count(".") != 1:
        return None
    body_text, mac_text = state.split(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except ValueError:
        return None
    for key in _keys(settings):
        if hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), mac):
            break
    else:
        return None
    try:
        data = orjson.loads(body)
        if int(data["e"]) < time.time():
            return None
        return StateClaims(uuid.UUID(data["n"]), uuid.UUID(data["t"]), uuid.UUID(data["a"]), key)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def code_verifier(key: bytes, nonce: uuid.UUID) -> str:
    """43 characters of base64url (RFC 7636 4.1), secret to anyone without the key."""
    return _b64(hmac.new(key, b"pkce " + nonce.bytes, hashlib.sha256).digest())


def code_challenge(verifier: str) -> str:
    """S256: base64url(SHA-256(verifier)) without padding (RFC 7636 4.2)."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def first_key(settings: Settings) -> bytes:
    return _keys(settings)[0]
