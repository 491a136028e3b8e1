"""POP3 AUTH with an OAuth2 bearer token (RFC 5034; XOAUTH2 or RFC 7628 OAUTHBEARER).

The initial response goes on the AUTH line when the line stays within RFC 5034's 255 octets,
else after the server's empty `+ ` challenge. A refusal comes as a `+ ` error challenge
(base64 JSON), answered before the final -ERR; when it says the token was refused, one newer
token is asked for and tried. The AUTH line holds the token: never logged, never in an error.
"""

from __future__ import annotations

from typing import Any

from services.errors import BadCredentials, ProviderPermanentError
from services.oauth import sasl

# The client (ImapClient / Pop3Client): typed loosely, the client module imports this one.

_MAX_LINE = 255
_MAX_STEPS = 10


async def _authenticate(client: Any, mechanism: str, token: str) -> tuple[bool, dict[str, object]]:
    cfg = client.config
    client._command = "AUTH"
    ir = sasl.initial_response(mechanism, cfg.username, token, host=cfg.host, port=cfg.port)
    line = b"AUTH " + mechanism.encode()
    pending: bytes | None = None
    if len(line) + 1 + len(ir) + 2 <= _MAX_LINE:
        await client._send(line + b" " + ir + b"\r\n")
    else:
        await client._send(line + b"\r\n")
        pending = ir
    challenge: dict[str, object] = {}
    for _ in range(_MAX_STEPS):
        reply = await client._readline()
        if reply.startswith(b"+OK"):
            return True, challenge
        if reply.startswith(b"-ERR"):
            return False, challenge
        if not reply.startswith(b"+"):
            raise client._lost("sent a reply that is not POP3")
        if pending is not None:
            await client._send(pending + b"\r\n")
            pending = None
        else:
            challenge = sasl.error_challenge(reply[1:])
            await client._send(sasl.ERROR_ACK[mechanism] + b"\r\n")
    raise client._lost("sent too many answers to AUTH")


async def bearer_login(client: Any, tokens: sasl.TokenSource) -> None:
    mechanism = sasl.choose(client.capabilities)
    if mechanism is None:
        raise ProviderPermanentError("The POP3 server offers neither XOAUTH2 nor OAUTHBEARER.")
    client.login_method = mechanism
    token = await tokens.access_token()
    ok, challenge = await _authenticate(client, mechanism, token)
    if not ok and sasl.token_refused(challenge):
        token = await tokens.access_token(refused=token)
        ok, challenge = await _authenticate(client, mechanism, token)
    if not ok:
        raise BadCredentials("The POP3 server refused the OAuth2 token.")
