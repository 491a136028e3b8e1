"""Connecting an OAuth2 mailbox: the account row, its servers (from the app) and its grant.

Two ways in: `POST /v1/accounts` with `"oauth2": {"app_id", "refresh_token", ...}` (tenants
with their own consent screen), and the hosted flow's callback (services/oauth/flow.py), which
reconnects the tenant's existing account of the same address instead of adding a second one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, AccountStatus, OAuthApp
from database.repositories.accounts import access as accounts_repo
from database.repositories.accounts import admin as repo
from database.repositories.oauth import apps as apps_repo
from services.accounts.credentials import oauth_secrets, oauth_servers
from services.accounts.quotas import ensure_account_room
from services.crypto import encrypt_json
from services.errors import NotFound
from services.oauth.grants import put_grant
from settings import Settings

_PUBLIC = ("host", "port", "security", "username")


@dataclass(frozen=True)
class Grant:
    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None


async def app_for(session: AsyncSession, tenant_id: uuid.UUID, app_id: uuid.UUID) -> OAuthApp:
    app = await apps_repo.get_live(session, tenant_id, app_id)
    if app is None:
        raise NotFound("No such OAuth app.")
    return app


async def connect(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    app: OAuthApp,
    inbound: str,
    email: str,
    grant: Grant,
    sync_interval_s: int = 300,
    account: Account | None = None,
) -> Account:
    """Create the account (or give `account` this grant), servers from the app."""
    servers = oauth_servers(app, inbound=inbound, email=email)
    public = {k: {f: v[f] for f in _PUBLIC if f in v} for k, v in servers.items()}
    if account is None:
        await ensure_account_room(
            session, tenant_id=tenant_id, cap=settings.max_accounts_per_tenant
        )
        account = await repo.create(
            session,
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "provider": inbound,
                "email": email,
                "sync_interval_s": sync_interval_s,
                "settings": public,
            },
        )
    else:
        await repo.update(
            session,
            tenant_id,
            account.id,
            {"settings": public, "status": AccountStatus.active, "status_reason": None},
        )
        await session.refresh(account)
    await repo.put_credential(
        session,
        tenant_id=tenant_id,
        account_id=account.id,
        ciphertext=encrypt_json(settings, oauth_secrets(app.id, servers)),
    )
    await put_grant(
        session,
        settings,
        tenant_id=tenant_id,
        account_id=account.id,
        app_id=app.id,
        refresh_token=grant.refresh_token,
        access_token=grant.access_token,
        expires_at=grant.expires_at,
    )
    return account


async def create_from_body(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    body: dict[str, Any],
) -> Account:
    """`POST /v1/accounts` with `oauth2` in place of passwords."""
    oauth2 = body["oauth2"]
    app = await app_for(session, tenant_id, uuid.UUID(str(oauth2["app_id"])))
    expires = oauth2.get("expires_at")
    return await connect(
        session,
        settings=settings,
        tenant_id=tenant_id,
        user_id=user_id,
        app=app,
        inbound=body["provider"],
        email=body["email"],
        grant=Grant(
            refresh_token=oauth2["refresh_token"],
            access_token=oauth2.get("access_token"),
            expires_at=datetime.fromisoformat(expires) if isinstance(expires, str) else expires,
        ),
        sync_interval_s=body.get("sync_interval_s", 300),
    )


async def reconnect_target(
    session: AsyncSession, tenant_id: uuid.UUID, email: str, inbound: str
) -> Account | None:
    return await accounts_repo.get_live_by_email(session, tenant_id, email, inbound)
