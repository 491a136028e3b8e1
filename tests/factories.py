"""Plain `create_*` helpers writing real rows."""

from __future__ import annotations

import uuid
from typing import Any

from database.engine import Database
from database.models import Account, Provider, Tenant, User


async def create_tenant(db: Database, name: str | None = None) -> Tenant:
    async with db.transaction() as s:
        tenant = Tenant(name=name or f"tenant-{uuid.uuid4().hex[:8]}")
        s.add(tenant)
    return tenant


async def create_user(db: Database, tenant: Tenant, email: str | None = None) -> User:
    async with db.transaction() as s:
        user = User(tenant_id=tenant.id, email=email or f"u-{uuid.uuid4().hex[:6]}@example.com")
        s.add(user)
    return user


async def create_nylas_account(
    db: Database, *, grant_id: str | None = None, tenant: Tenant | None = None, **fields: Any
) -> Account:
    tenant = tenant or await create_tenant(db)
    user = await create_user(db, tenant)
    async with db.transaction() as s:
        account = Account(
            tenant_id=tenant.id,
            user_id=user.id,
            provider=Provider.nylas,
            email=user.email,
            grant_id=grant_id or f"grant-{uuid.uuid4().hex[:10]}",
            **fields,
        )
        s.add(account)
    return account
