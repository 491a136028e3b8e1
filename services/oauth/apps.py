"""OAuth apps per tenant (API.md "OAuth2 mailboxes"): create with presets, list, read, delete.

The client secret is stored encrypted (services/crypto.py) and never returned. A `generic`
app's URLs and mail hosts pass the destination policy at create and again at every use.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import OAuthApp
from database.repositories.oauth import apps as repo
from services import cursors, destination
from services.crypto import decrypt_json, encrypt_json
from services.errors import NotFound
from services.oauth import http
from services.oauth.endpoint import Client
from services.oauth.providers import app_config
from settings import Settings

_URLS = ("authorize_url", "token_url", "userinfo_url")


async def _check_generic(settings: Settings, config: dict[str, Any]) -> None:
    for key in _URLS:
        if config.get(key):
            await http.check_url(str(config[key]), settings)
    for role in ("imap", "smtp", "pop3"):
        server = config.get(role)
        if server:
            await destination.check_configured_host(
                str(server["host"]),
                int(server["port"]),
                role=role.upper(),
                allowed=settings.allowed_private_mail_hosts,
            )


async def create_app(
    session: AsyncSession, *, settings: Settings, tenant_id: uuid.UUID, body: dict[str, Any]
) -> OAuthApp:
    config = app_config(body)
    if body["provider"] == "generic":
        await _check_generic(settings, config)
    return await repo.create(
        session,
        {
            "tenant_id": tenant_id,
            "provider": body["provider"],
            "client_id": body["client_id"],
            "secret_ciphertext": encrypt_json(settings, {"client_secret": body["client_secret"]}),
            "config": config,
        },
    )


async def get_app(session: AsyncSession, tenant_id: uuid.UUID, app_id: uuid.UUID) -> OAuthApp:
    app = await repo.get_live(session, tenant_id, app_id)
    if app is None:
        raise NotFound("No such OAuth app.")
    return app


async def list_apps(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> tuple[list[OAuthApp], str | None]:
    key = cursors.signing_key(settings)
    scope = {"kind": "oauth_apps", "tenant": str(tenant_id)}
    after = cursors.decode(key, scope, cursor) if cursor else None
    rows = await repo.list_live(session, tenant_id, limit=limit + 1, after=after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, scope, rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


async def delete_app(session: AsyncSession, tenant_id: uuid.UUID, app_id: uuid.UUID) -> None:
    """Soft delete: no new authorizations or accounts; connected accounts keep their grant."""
    if not await repo.soft_delete(session, tenant_id, app_id):
        raise NotFound("No such OAuth app.")


def client_of(settings: Settings, app: OAuthApp) -> Client:
    secret = str(decrypt_json(settings, app.secret_ciphertext).get("client_secret") or "")
    return Client(token_url=app.config["token_url"], client_id=app.client_id, client_secret=secret)


def public(app: OAuthApp) -> dict[str, Any]:
    """The app as the API shows it: everything but the secret."""
    config = app.config
    out: dict[str, Any] = {
        "id": str(app.id),
        "provider": app.provider,
        "client_id": app.client_id,
        "allowed_redirect_origins": config.get("allowed_redirect_origins", []),
        "authorize_url": config.get("authorize_url"),
        "token_url": config.get("token_url"),
        "userinfo_url": config.get("userinfo_url"),
        "scopes": config.get("scopes", []),
        "imap": config.get("imap"),
        "smtp": config.get("smtp"),
        "pop3": config.get("pop3"),
        "created_at": app.created_at,
    }
    if app.provider == "microsoft":
        out["tenant"] = config.get("tenant", "common")
    return out
