"""IMAP AUTHENTICATE with an OAuth2 bearer token (RFC 3501 6.2.2; XOAUTH2 or RFC 7628 OAUTHBEARER).

With SASL-IR (RFC 4959) the initial response goes on the command line; without it, after the
server's empty `+`. A refusal comes as a `+` with base64 JSON (the error challenge), which is
answered (empty line / %x01) before the tagged NO. When that JSON says the token was refused,
the client asks the grant for a newer token once and tries again on the same connection.
The command line holds the token: it is never logged, and no error quotes it.
"""

from __future__ import annotations

from typing import Any

from services.errors import BadCredentials, ProviderPermanentError
from services.oauth import sasl

# The client (ImapClient / Pop3Client): typed loosely, the client module imports this one.

# Responses one AUTHENTICATE may take before we give up on the server.
_MAX_STEPS = 20


async def _authenticate(
    client: Any, mechanism: str, token: str
) -> tuple[bool, bytes, dict[str, object]]:
    """(accepted, the tagged line, the error challenge's JSON or {})."""
    cfg = client.config
    client._command = "AUTHENTICATE"
    ir = sasl.initial_response(mechanism, cfg.username, token, host=cfg.host, port=cfg.port)
    command = b"AUTHENTICATE " + mechanism.encode()
    if client.has("SASL-IR"):
        tag = await client._send(command + b" " + ir)
        pending = None
    else:
        tag = await client._send(command)
        pending = ir
    challenge: dict[str, object] = {}
    for _ in range(_MAX_STEPS):
        resp = await client._read_response()
        if resp.startswith(b"+"):
            if pending is not None:
                await client._send_raw(pending + b"\r\n")
                pending = None
            else:
                challenge = sasl.error_challenge(resp[1:])
                await client._send_raw(sasl.ERROR_ACK[mechanism] + b"\r\n")
            continue
        if resp.startswith(tag + b" "):
            return resp[len(tag) + 1 :][:2].upper() == b"OK", resp, challenge
        if resp[:5].upper() == b"* BYE":
            raise client._lost("said BYE")
    raise client._violation("sent too many answers to AUTHENTICATE")


async def bearer_login(client: Any, tokens: sasl.TokenSource) -> bytes:
    """Log in with the grant's token; the tagged OK line (its CAPABILITY code is read after)."""
    mechanism = sasl.choose(client.capabilities)
    if mechanism is None:
        raise ProviderPermanentError("The IMAP server offers neither XOAUTH2 nor OAUTHBEARER.")
    token = await tokens.access_token()
    ok, status, challenge = await _authenticate(client, mechanism, token)
    if not ok and sasl.token_refused(challenge):
        token = await tokens.access_token(refused=token)
        ok, status, challenge = await _authenticate(client, mechanism, token)
    if not ok:
        raise BadCredentials("The IMAP server refused the OAuth2 token.")
    return status
