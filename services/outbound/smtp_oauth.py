"""SMTP AUTH XOAUTH2 (or OAUTHBEARER, RFC 7628) over an aiosmtplib session (RFC 4954).

aiosmtplib logs in with PLAIN, LOGIN or CRAM-MD5 only; the bearer mechanisms are one AUTH
command with the initial response, and on failure a 334 error challenge (base64 JSON) that
is answered before the final 535. When the JSON says the token was refused, one newer token
is asked for and tried. The AUTH line holds the token: never logged, never in an error.
"""

from __future__ import annotations

import aiosmtplib

from services.errors import BadCredentials
from services.oauth import sasl


async def _authenticate(
    client: aiosmtplib.SMTP, mechanism: str, username: str, token: str
) -> tuple[int, dict[str, object]]:
    """(the final reply code, the error challenge's JSON or {})."""
    hostname = client.hostname or ""
    ir = sasl.initial_response(mechanism, username, token, host=hostname, port=client.port or 0)
    reply = await client.execute_command(b"AUTH", mechanism.encode(), ir)
    challenge: dict[str, object] = {}
    if reply.code == 334:
        challenge = sasl.error_challenge(reply.message.encode("ascii", "replace"))
        reply = await client.execute_command(sasl.ERROR_ACK[mechanism])
    return reply.code, challenge


async def bearer_login(client: aiosmtplib.SMTP, username: str, tokens: sasl.TokenSource) -> None:
    offered = {f"AUTH={m.upper()}" for m in client.server_auth_methods}
    mechanism = sasl.choose(offered)
    if mechanism is None:
        raise BadCredentials("The SMTP server offers neither XOAUTH2 nor OAUTHBEARER.")
    token = await tokens.access_token()
    code, challenge = await _authenticate(client, mechanism, username, token)
    if code != 235 and sasl.token_refused(challenge):
        token = await tokens.access_token(refused=token)
        code, challenge = await _authenticate(client, mechanism, username, token)
    if code != 235:
        raise BadCredentials(f"The SMTP server refused the OAuth2 token ({code}).")
