"""Per-tenant caps on what a tenant may hold (rates are in services/ratelimit.py)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.accounts import quotas as repo
from services.errors import AccountLimitReached


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
