"""Verifying an account before it is saved: log in to each of its servers and say what worked.

`POST /v1/accounts/verify` and `POST /v1/accounts?verify=true` take the create body. The
destination rule comes first (422 mail_host_not_allowed, nothing touched); then the inbound
server (IMAP or POP3) and SMTP are tried at the same time, each within VERIFY_TIMEOUT_S, and
each answers one sentence of ours. A server's banner or reply text is never quoted: a tenant
may point the check at any public host, and its words are not ours to show.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OAuthApp, Provider
from database.repositories.accounts import access as accounts_repo
from services.accounts import admin as accounts
from services.accounts.verify_oauth import servers_for
from services.crypto import decrypt_json
from services.destination import MailHostNotAllowed
from services.errors import BadCredentials, NotFound, PostroomError, ValidationFailed
from services.imap.client import ImapClient, ImapConfig
from services.oauth.endpoint import GrantRevoked
from services.oauth.http import OAuthEndpointUnavailable
from services.outbound.smtp import SmtpConfig, SmtpConnection
from services.pop3.client import Pop3Client, Pop3Config
from settings import Settings

# Per server, the whole attempt (resolve, connect, TLS, login): the API answers within it,
# below the usual 10 s client timeout, and both servers are tried at the same time.
VERIFY_TIMEOUT_S = 8.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str


class AccountVerificationFailed(ValidationFailed):
    """A server of the account refused the login or could not be reached."""

    code = "account_verification_failed"

    def __init__(self, checks: dict[str, Check]) -> None:
        failed = "; ".join(c.message for c in checks.values() if not c.ok)
        super().__init__(f"The account was not saved: {failed}")
        self.details = [
            {"server": name, "ok": c.ok, "message": c.message} for name, c in checks.items()
        ]


def all_ok(checks: dict[str, Check]) -> bool:
    return all(c.ok for c in checks.values())


async def _attempt(role: str, login: Any) -> Check:
    """Run one login attempt; its outcome as a sentence of ours."""
    try:
        # The clients time out each step; this bounds the sum of steps of a slow server.
        async with asyncio.timeout(VERIFY_TIMEOUT_S):
            return Check(True, await login())
    except (GrantRevoked, OAuthEndpointUnavailable) as exc:
        return Check(False, exc.message)
    except BadCredentials as exc:
        if "OAuth2" in exc.message:
            return Check(False, exc.message)
        return Check(False, f"The {role} server refused the login: wrong username or password.")
    except MailHostNotAllowed as exc:
        return Check(False, exc.message)
    except PostroomError as exc:  # the clients' own sentences: what failed, never the peer's text
        return Check(False, exc.message)
    except TimeoutError:
        return Check(False, f"The {role} server did not answer within {VERIFY_TIMEOUT_S:g}s.")
    except Exception as exc:  # a check must answer, whatever broke
        log.warning("account_verify_failed", role=role, error=type(exc).__name__)
        return Check(False, f"The {role} check failed ({type(exc).__name__}).")


async def _imap(server: dict[str, Any], settings: Settings) -> str:
    config = ImapConfig.from_credentials(
        {"imap": server},
        timeout=VERIFY_TIMEOUT_S,
        allowed_private_hosts=settings.allowed_private_mail_hosts,
    )
    async with ImapClient(config):
        return "Logged in to the IMAP server."


async def _pop3(server: dict[str, Any], settings: Settings) -> str:
    config = Pop3Config.from_credentials(
        {"pop3": server},
        timeout=VERIFY_TIMEOUT_S,
        allowed_private_hosts=settings.allowed_private_mail_hosts,
    )
    async with Pop3Client(config) as client:
        if not client.has("UIDL"):
            # Not a login failure, but the account could never sync: say so now.
            await client.uidl()
        return "Logged in to the POP3 server."


async def _smtp(server: dict[str, Any], settings: Settings) -> str:
    config = dataclasses.replace(
        SmtpConfig.from_credential(server),
        timeout=VERIFY_TIMEOUT_S,
        allowed_private_hosts=settings.allowed_private_mail_hosts,
        allowed_relay_hosts=settings.allowed_relay_hosts,
    )
    async with SmtpConnection(config) as conn:
        await conn.connect()
    if config.username is None or (config.password is None and config.oauth is None):
        return "Connected to the SMTP server (no login: the account sends without AUTH)."
    return "Logged in to the SMTP server."


_INBOUND = {Provider.imap: ("IMAP", _imap), Provider.pop3: ("POP3", _pop3)}


def target_hosts(
    settings: Settings, body: dict[str, Any], oauth_app: OAuthApp | None = None
) -> list[str]:
    """The hosts a verification of `body` would connect to, normalised (none for Nylas; an
    `oauth2` body's come from its app)."""
    provider = body["provider"]
    if provider == Provider.nylas:
        return []
    if body.get("oauth2"):
        if oauth_app is None:
            return []
        servers = servers_for(settings, oauth_app, body)
        inbound, smtp = servers[provider], servers["smtp"]
    else:
        inbound, smtp = body[provider], body["smtp"]
    hosts = [normal_host(inbound["host"]), normal_host(smtp["host"])]
    return list(dict.fromkeys(hosts))


def normal_host(host: Any) -> str:
    return str(host).strip().strip("[]").rstrip(".").lower()


async def proved_hosts(session: AsyncSession, settings: Settings, tenant_id: uuid.UUID) -> set[str]:
    """Inbound hosts of the tenant's accounts that have synced: a login there worked once, so
    the tenant owns a mailbox on it and may read that server's failures in detail."""
    hosts: set[str] = set()
    for token in await accounts_repo.synced_credentials(session, tenant_id):
        try:
            data = decrypt_json(settings, token)
        except Exception as exc:  # a credential under a retired key proves nothing
            log.warning("proved_host_unreadable", error=type(exc).__name__)
            continue
        for role in ("imap", "pop3"):
            server = data.get(role)
            if isinstance(server, dict) and server.get("host"):
                hosts.add(normal_host(server["host"]))
    return hosts


def _generic(role: str, check: Check, host: str, proved: set[str] | None) -> Check:
    """A failure against a host the tenant has not proved says only that it failed: which
    step failed (no answer, refused port, TLS, login) would make the check a port scanner
    and a password oracle for any host on the internet."""
    if check.ok or proved is None or normal_host(host) in proved:
        return check
    return Check(
        False,
        f"The {role} check did not succeed: the server could not be reached, or it did not "
        "accept these settings and credentials.",
    )


async def verify_account(
    settings: Settings,
    body: dict[str, Any],
    *,
    nylas: accounts.GrantLookup | None,
    oauth_app: OAuthApp | None = None,
    proved: set[str] | None = None,
) -> dict[str, Check]:
    """Per server name ("imap" or "pop3", "smtp"; "nylas" for a grant): what worked.

    An `oauth2` body logs in with its grant, on the servers of `oauth_app` (its app). With
    `proved` (the tenant's proved hosts), failures on any other host are generic."""
    provider = body["provider"]
    if provider == Provider.nylas:
        return {"nylas": await _grant(body, nylas)}
    if body.get("oauth2"):
        if oauth_app is None:
            raise NotFound("No such OAuth app.")
        servers = servers_for(settings, oauth_app, body)
        inbound, smtp = servers[provider], servers["smtp"]
    else:
        inbound = {k: v for k, v in body[provider].items() if v is not None}
        smtp = {k: v for k, v in body["smtp"].items() if v is not None}
    # The destination rule first: a refused host is 422 and no connection is made at all.
    await accounts.check_hosts(settings, {provider: inbound, "smtp": smtp})
    role, login = _INBOUND[Provider(provider)]
    inbound_check, smtp_check = await asyncio.gather(
        _attempt(role, lambda: login(inbound, settings)),
        _attempt("SMTP", lambda: _smtp(smtp, settings)),
    )
    checks = {
        provider: _generic(role, inbound_check, inbound["host"], proved),
        "smtp": _generic("SMTP", smtp_check, smtp["host"], proved),
    }
    log.info("account_verified", provider=provider, **{k: c.ok for k, c in checks.items()})
    return checks


async def _grant(body: dict[str, Any], nylas: accounts.GrantLookup | None) -> Check:
    try:
        await accounts.check_grant(nylas, grant_id=body["nylas"]["grant_id"], email=body["email"])
    except PostroomError as exc:
        return Check(False, exc.message)
    return Check(True, "The Nylas grant exists and belongs to this address.")
