"""Accounts as the API manages them: secrets go only into the encrypted credential row."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, AccountStatus, Provider
from database.repositories.accounts import access as accounts_repo
from database.repositories.accounts import admin as repo
from database.repositories.oauth import apps as oauth_apps_repo
from database.repositories.oauth import tokens as oauth_tokens_repo
from services import cursors, destination
from services.accounts import oauth_connect
from services.accounts.quotas import ensure_account_room
from services.crypto import decrypt_json, encrypt_json, rotate
from services.errors import Conflict, NotFound, ProviderNotFound, ServiceUnavailable
from settings import Settings

_PUBLIC_SERVER_FIELDS = ("host", "port", "security", "username")


def _server_settings(server: dict[str, Any]) -> dict[str, Any]:
    """The non-secret part of IMAP/SMTP settings, kept readable on the account row."""
    return {k: server[k] for k in _PUBLIC_SERVER_FIELDS if server.get(k) is not None}


def _present(server: dict[str, Any]) -> dict[str, Any]:
    """Settings as stored: an SMTP relay without credentials has no username/password keys."""
    return {k: v for k, v in server.items() if v is not None}


async def _check_hosts(settings: Settings, servers: dict[str, dict[str, Any]]) -> None:
    """Each server's host must be public or allowed (422 mail_host_not_allowed otherwise)."""
    for role, server in servers.items():
        await destination.check_configured_host(
            str(server["host"]),
            int(server["port"]),
            role=role.upper(),
            allowed=settings.allowed_private_mail_hosts,
        )
        if role == "smtp":
            await destination.check_configured_relay(
                str(server["host"]),
                int(server["port"]),
                authenticated=bool(server.get("username")),
                allowed=settings.allowed_relay_hosts,
            )


class GrantLookup(Protocol):
    async def find_grant(self, grant_id: str) -> dict[str, Any]: ...


async def _check_grant(nylas: GrantLookup | None, *, grant_id: str, email: str) -> None:
    """The grant must exist in our Nylas application and belong to the address given.

    Every grant of the application is reachable with its one API key, so an unchecked grant
    id would let a tenant connect someone else's mailbox. Proving the address as well keeps
    a guessed or leaked grant id from being enough; anything else reads as "no such grant".
    """
    if nylas is None:
        raise ServiceUnavailable("Nylas is not configured on this server (POSTROOM_NYLAS_API_KEY).")
    try:
        grant = await nylas.find_grant(grant_id)
    except ProviderNotFound:
        raise NotFound("No such Nylas grant.") from None
    # The grant answered must be the one asked for: an id that a path or a proxy turned into
    # another grant's (`x/../other`) must not attach that other grant.
    if str(grant.get("id") or "") != grant_id:
        raise NotFound("No such Nylas grant.")
    if str(grant.get("email") or "").casefold() != email.casefold():
        raise NotFound("No such Nylas grant.")


async def create_account(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    body: dict[str, Any],
    nylas: GrantLookup | None = None,
) -> Account:
    """Create an IMAP+SMTP, POP3+SMTP or Nylas account and store its secrets encrypted."""
    if body.get("oauth2"):
        return await oauth_connect.create_from_body(
            session, settings=settings, tenant_id=tenant_id, user_id=user_id, body=body
        )
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "provider": body["provider"],
        "email": body["email"],
        "sync_interval_s": body.get("sync_interval_s", 300),
    }
    if body["provider"] in (Provider.imap, Provider.pop3):
        inbound = body["provider"]
        servers = {inbound: _present(body[inbound]), "smtp": _present(body["smtp"])}
        await _check_hosts(settings, servers)
        values["settings"] = {k: _server_settings(v) for k, v in servers.items()}
        secrets: dict[str, Any] = servers
    else:
        await _check_grant(nylas, grant_id=body["nylas"]["grant_id"], email=body["email"])
        values["grant_id"] = body["nylas"]["grant_id"]
        secrets = {"nylas": body["nylas"]}
    await ensure_account_room(session, tenant_id=tenant_id, cap=settings.max_accounts_per_tenant)
    try:
        async with session.begin_nested():
            account = await repo.create(session, values)
    except sa_exc.IntegrityError:
        raise Conflict("This Nylas grant is already connected to an account.") from None
    await repo.put_credential(
        session,
        tenant_id=tenant_id,
        account_id=account.id,
        ciphertext=encrypt_json(settings, secrets),
    )
    return account


async def get_account(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account:
    """A live account of the tenant, or 404 (also for another tenant's account)."""
    account = await accounts_repo.get_for_tenant(session, tenant_id, account_id)
    if account is None:
        raise NotFound("No such account.")
    return account


async def list_accounts(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> tuple[list[Account], str | None]:
    key = cursors.signing_key(settings)
    scope = {"kind": "accounts", "tenant": str(tenant_id)}
    after = cursors.decode(key, scope, cursor) if cursor else None
    rows = await repo.list_live(session, tenant_id, limit=limit + 1, after=after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, scope, rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


async def update_account(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    changes: dict[str, Any],
) -> Account:
    """Apply a PATCH; new IMAP/SMTP secrets replace the encrypted ones."""
    account = await get_account(session, tenant_id, account_id)
    values: dict[str, Any] = {}
    if changes.get("sync_interval_s") is not None:
        values["sync_interval_s"] = changes["sync_interval_s"]
    if changes.get("status") is not None:
        values["status"] = AccountStatus(changes["status"])
        values["status_reason"] = None
    servers = {
        k: _present(changes[k]) for k in ("imap", "pop3", "smtp") if changes.get(k) is not None
    }
    if servers:
        if account.provider == Provider.nylas:
            raise Conflict("Only IMAP and POP3 accounts have server settings.")
        other = "pop3" if account.provider == Provider.imap else "imap"
        if other in servers:
            raise Conflict(
                f"This {account.provider.upper()} account has no {other.upper()} settings."
            )
        # The account was only read so far: end that transaction before the host names are
        # looked up (DNS may take seconds), so no connection sits idle in transaction; the
        # writes below begin a new one, which the route commits.
        if session.in_transaction():
            await session.commit()
        await _check_hosts(settings, servers)
        stored = await accounts_repo.credential_ciphertext(
            session, tenant_id=tenant_id, account_id=account_id
        )
        secrets = decrypt_json(settings, stored) if stored else {}
        if "oauth2" in secrets:
            raise Conflict("An OAuth2 account's servers come from its OAuth app.")
        secrets.update(servers)
        public = dict(account.settings or {})
        public.update({k: _server_settings(v) for k, v in servers.items()})
        values["settings"] = public
        await repo.put_credential(
            session,
            tenant_id=tenant_id,
            account_id=account_id,
            ciphertext=encrypt_json(settings, secrets),
        )
    if values:
        await repo.update(session, tenant_id, account_id, values)
        await session.refresh(account)
    return account


async def delete_account(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> None:
    if not await repo.soft_delete(session, tenant_id, account_id):
        raise NotFound("No such account.")


async def list_folders(
    session: AsyncSession, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> list[tuple[uuid.UUID, str, str | None, int]]:
    await get_account(session, tenant_id, account_id)
    return await repo.folders_with_counts(session, tenant_id, account_id)


async def rotate_all_credentials(session: AsyncSession, *, settings: Settings) -> int:
    """Re-encrypt every credential with the first configured key; the count done."""
    rows = await repo.all_credentials(session)
    for credential_id, ciphertext in rows:
        await repo.set_ciphertext(session, credential_id, rotate(settings, ciphertext))
    # OAuth client secrets and grants are encrypted with the same keys.
    apps = await oauth_apps_repo.all_secrets(session)
    for app_id, ciphertext in apps:
        await oauth_apps_repo.set_secret(session, app_id, rotate(settings, ciphertext))
    grants = await oauth_tokens_repo.all_ciphertexts(session)
    for grant_id, ciphertext in grants:
        await oauth_tokens_repo.set_ciphertext(session, grant_id, rotate(settings, ciphertext))
    return len(rows) + len(apps) + len(grants)


# The checks create runs, for verification (services.accounts.verify) to run first.
check_hosts = _check_hosts
check_grant = _check_grant
