"""Per-tenant caps on what a tenant may hold (rates are in services/ratelimit.py)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.accounts import quotas as repo
from services.errors import (
    AccountLimitReached,
    RuleLimitReached,
    StorageQuotaExceeded,
    TemplateLimitReached,
)


async def ensure_account_room(session: AsyncSession, *, tenant_id: uuid.UUID, cap: int) -> None:
    """Refuse a new account once the tenant has `cap` live ones (422 account_limit_reached).

    Takes the tenant's row lock first, held until the caller commits: two parallel creates
    count one after the other, so they cannot both see room for one more. Call it after any
    network check, so the lock is never held while waiting on another server.
    """
    await repo.lock_tenant(session, tenant_id)
    if await repo.count_live_accounts(session, tenant_id, upto=cap) >= cap:
        raise AccountLimitReached(
            f"This tenant already has {cap} accounts, the most it may have; "
            "delete one or ask the operator to raise the limit."
        )


async def ensure_rule_room(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, cap: int
) -> None:
    """Refuse a new rule once the account has `cap` (422 rule_limit_reached), under the
    tenant's lock as for accounts: every stored rule is read for every new message."""
    await repo.lock_tenant(session, tenant_id)
    if await repo.count_rules(session, tenant_id, account_id, upto=cap) >= cap:
        raise RuleLimitReached(
            f"This account already has {cap} rules, the most it may have; delete one first."
        )


async def ensure_template_room(
    session: AsyncSession, *, tenant_id: uuid.UUID, name: str, cap: int
) -> None:
    """Refuse a new template once the tenant has `cap` (422 template_limit_reached); replacing
    an existing one is always allowed."""
    await repo.lock_tenant(session, tenant_id)
    if await repo.template_exists(session, tenant_id, name):
        return
    if await repo.count_templates(session, tenant_id, upto=cap) >= cap:
        raise TemplateLimitReached(
            f"This tenant already has {cap} templates, the most it may have; delete one first."
        )


async def ensure_storage_room(
    session: AsyncSession, *, tenant_id: uuid.UUID, adding: int, quota: int
) -> None:
    """Refuse what would take the tenant's drafts, scheduled sends and uploads past `quota`
    bytes (422 storage_quota_exceeded); 0 is no quota. Under the tenant's lock, so parallel
    sends cannot each see the same room."""
    if quota <= 0:
        return
    await repo.lock_tenant(session, tenant_id)
    used = await repo.stored_bytes(session, tenant_id)
    if used + adding > quota:
        raise StorageQuotaExceeded(
            f"This would store {used + adding} bytes of drafts, scheduled sends and uploads; "
            f"the tenant may hold {quota}. Sent mail is freed when its job is purged."
        )
