"""Loading a mail account for a task: through its tenant first, then its decrypted settings."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, AccountStatus
from database.repositories.accounts import access as accounts_repo
from services.accounts.credentials import decrypted
from services.errors import PermissionDenied, ValidationFailed
from services.imap.client import ImapConfig
from services.pop3.client import Pop3Config
from settings import Settings

IMAP_TIMEOUT_S = 30.0


async def account_for_tenant(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> Account:
    """The account, or PermissionDenied when it is not this tenant's (or is gone)."""
    account = await accounts_repo.get_for_tenant(session, tenant_id, account_id)
    if account is None:
        raise PermissionDenied("The account does not belong to this tenant.")
    return account


async def _secrets(session: AsyncSession, settings: Settings, account: Account) -> dict[str, Any]:
    """The account's decrypted credential; refused for an inactive account or none stored."""
    if account.status != AccountStatus.active:
        raise ValidationFailed(f"The account is {account.status}; it cannot be synced.")
    token = await accounts_repo.credential_ciphertext(
        session, tenant_id=account.tenant_id, account_id=account.id
    )
    if token is None:
        raise ValidationFailed("The account has no stored credentials.")
    return decrypted(session, settings, account, token)


async def imap_config(session: AsyncSession, settings: Settings, account: Account) -> ImapConfig:
    """Connection settings from the account's encrypted credential."""
    data = await _secrets(session, settings, account)
    if not isinstance(data.get("imap"), dict):
        raise ValidationFailed("The account's credentials hold no IMAP settings.")
    return ImapConfig.from_credentials(
        data,
        timeout=IMAP_TIMEOUT_S,
        allowed_private_hosts=settings.allowed_private_mail_hosts,
    )


async def pop3_config(session: AsyncSession, settings: Settings, account: Account) -> Pop3Config:
    """POP3 connection settings from the account's encrypted credential."""
    data = await _secrets(session, settings, account)
    if not isinstance(data.get("pop3"), dict):
        raise ValidationFailed("The account's credentials hold no POP3 settings.")
    config = Pop3Config.from_credentials(
        data,
        timeout=IMAP_TIMEOUT_S,
        allowed_private_hosts=settings.allowed_private_mail_hosts,
    )
    # POSTROOM_MAX_MESSAGE_BYTES where this tree has it; the client's own default otherwise.
    config.max_message_bytes = getattr(settings, "max_message_bytes", config.max_message_bytes)
    return config
