"""The one place a mail client's login comes from: a password, or an OAuth2 grant's tokens.

An account's credential row holds its servers; a password account's sections carry
`username`/`password`, an OAuth2 account's carry `username` only and the row says
`"oauth2": {"app_id"}`, its tokens being in oauth_token (services/oauth/grants.py). `login_for`
gives every server section of the account what its client logs in with: the password as it
is, or `oauth` (services/oauth/refresh.GrantTokens), which the IMAP, POP3 and SMTP clients ask
for a fresh access token at the moment they log in, outside any transaction. No client reads
the account's secrets itself.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from database.engine import Database
from database.models import Account, OAuthApp
from services.crypto import decrypt_json
from services.errors import ValidationFailed
from services.oauth.refresh import GrantTokens
from settings import Settings

ROLES = ("imap", "pop3", "smtp")


def _database(source: Database | AsyncSession) -> Database:
    if isinstance(source, Database):
        return source
    engine = source.bind  # the session's engine: the grant's short transactions are its own
    return Database(engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False))  # type: ignore[arg-type]


def is_oauth(secrets: dict[str, Any]) -> bool:
    return isinstance(secrets.get("oauth2"), dict)


def login_for(
    source: Database | AsyncSession,
    settings: Settings,
    account: Account,
    secrets: dict[str, Any],
) -> dict[str, Any]:
    """The decrypted credential with each server's login: its password, or the grant's tokens."""
    if not is_oauth(secrets):
        return secrets
    tokens = GrantTokens(
        _database(source), settings, tenant_id=account.tenant_id, account_id=account.id
    )
    out = dict(secrets)
    for role in ROLES:
        if isinstance(secrets.get(role), dict):
            out[role] = {**secrets[role], "oauth": tokens}
    return out


def decrypted(
    source: Database | AsyncSession, settings: Settings, account: Account, ciphertext: str
) -> dict[str, Any]:
    return login_for(source, settings, account, decrypt_json(settings, ciphertext))


def oauth_servers(app: OAuthApp, *, inbound: str, email: str) -> dict[str, dict[str, Any]]:
    """An OAuth2 account's servers, from its app: the mailbox address is the SASL user."""
    config = app.config
    if not config.get(inbound):
        raise ValidationFailed(f"The OAuth app has no {inbound.upper()} server.")
    return {
        inbound: {**config[inbound], "username": email},
        "smtp": {**config["smtp"], "username": email},
    }


def oauth_secrets(app_id: uuid.UUID, servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {**servers, "oauth2": {"app_id": str(app_id)}}
