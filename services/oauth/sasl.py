"""SASL for OAuth2 bearer tokens: XOAUTH2 (Google's and Microsoft's) and OAUTHBEARER (RFC 7628).

Both send the user and the token in the initial response. On failure the server sends one
challenge, base64 JSON such as `{"status":"401","schemes":"bearer","scope":"..."}` (RFC 7628
3.2.2; Google sends "400"/"401" in XOAUTH2 too), which the client answers with an empty
response (XOAUTH2) or `%x01` (OAUTHBEARER, RFC 7628 3.2.3) before the final refusal. That JSON
says whether the token was the problem ("401", "invalid_token"): then one refresh and one more
try are worth it. Nothing here is ever logged: every string holds a token.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

import orjson

# What an expired or revoked bearer token looks like in the error challenge.
_TOKEN_STATUSES = {"401", "invalid_token"}


class TokenSource(Protocol):
    """Where a mail client gets an access token (services/oauth/refresh.GrantTokens)."""

    async def access_token(self, *, refused: str | None = None) -> str: ...


def xoauth2(user: str, token: str) -> bytes:
    raw = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    return base64.b64encode(raw)


def _saslname(user: str) -> str:
    # RFC 5801 gs2 saslname: "," and "=" are escaped.
    return user.replace("=", "=3D").replace(",", "=2C")


def oauthbearer(user: str, token: str, *, host: str, port: int) -> bytes:
    raw = (
        f"n,a={_saslname(user)},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    ).encode()
    return base64.b64encode(raw)


# The answer to the error challenge: empty for XOAUTH2, a lone %x01 for OAUTHBEARER.
ERROR_ACK = {"XOAUTH2": b"", "OAUTHBEARER": base64.b64encode(b"\x01")}


def initial_response(mechanism: str, user: str, token: str, *, host: str, port: int) -> bytes:
    if mechanism == "OAUTHBEARER":
        return oauthbearer(user, token, host=host, port=port)
    return xoauth2(user, token)


def error_challenge(data: bytes) -> dict[str, object]:
    """The server's JSON error challenge, or {} when it is not one."""
    try:
        parsed = orjson.loads(base64.b64decode(data.strip(), validate=True)[:4096])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def token_refused(challenge: dict[str, object]) -> bool:
    """The error says the token (not the user or the scope) was refused: refresh and retry."""
    return str(challenge.get("status", "")).lower() in _TOKEN_STATUSES


def choose(capabilities: set[str], prefix: str = "AUTH=") -> str | None:
    """XOAUTH2 where offered (Gmail and Outlook both do), else OAUTHBEARER, else None."""
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        if prefix + mechanism in capabilities:
            return mechanism
    return None
