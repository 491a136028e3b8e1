"""An account's OAuth2 tokens at rest: one Fernet token (services/crypto.py) per grant row."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.oauth import tokens as repo
from services.crypto import decrypt_json, encrypt_json
from settings import Settings


def seal(settings: Settings, *, access_token: str | None, refresh_token: str) -> str:
    return encrypt_json(settings, {"access_token": access_token, "refresh_token": refresh_token})


def unseal(settings: Settings, ciphertext: str) -> tuple[str | None, str]:
    """(access token or None, refresh token)."""
    data = decrypt_json(settings, ciphertext)
    access = data.get("access_token")
    return (access if isinstance(access, str) and access else None), str(
        data.get("refresh_token") or ""
    )


async def put_grant(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    app_id: uuid.UUID,
    refresh_token: str,
    access_token: str | None,
    expires_at: datetime | None,
) -> None:
    """Store (or replace) the account's grant; without an access token the first use refreshes."""
    await repo.put(
        session,
        tenant_id=tenant_id,
        account_id=account_id,
        app_id=app_id,
        ciphertext=seal(settings, access_token=access_token, refresh_token=refresh_token),
        expires_at=expires_at if access_token else None,
    )
