"""Helpers for /v1 tests: a tenant with a user and a working API key, as the CLI makes them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from api.auth import generate_key
from database.engine import Database
from database.models import Account, Folder, Message
from database.repositories import keys as keys_repo
from database.repositories import tenants as tenants_repo


@dataclass(frozen=True)
class Caller:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    key_id: uuid.UUID
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_caller(db: Database, tenant: str | None = None, email: str | None = None) -> Caller:
    new = generate_key()
    async with db.transaction() as s:
        name = tenant or f"t-{uuid.uuid4().hex[:8]}"
        found = await tenants_repo.get_tenant_by_name(s, name)
        tenant_id = found.id if found else await tenants_repo.create_tenant(s, name)
        assert tenant_id is not None
        user_id = await tenants_repo.create_user(
            s, tenant_id, email or f"u-{uuid.uuid4().hex[:6]}@example.com"
        )
        assert user_id is not None
        key_id = await keys_repo.create(
            s, tenant_id=tenant_id, user_id=user_id, key_hash=new.key_hash, prefix=new.prefix
        )
    return Caller(tenant_id=tenant_id, user_id=user_id, key_id=key_id, key=new.key)


def imap_account(email: str = "ana@example.com", password: str = "s3cret-Pass!") -> dict[str, Any]:
    server = {
        "host": "mail.example.com",
        "port": 993,
        "security": "tls",
        "username": email,
        "password": password,
    }
    return {
        "provider": "imap",
        "email": email,
        "imap": server,
        "smtp": {**server, "port": 587, "security": "starttls"},
        "sync_interval_s": 300,
    }


async def make_account(db: Database, caller: Caller, email: str = "box@example.com") -> uuid.UUID:
    async with db.transaction() as s:
        account = Account(
            tenant_id=caller.tenant_id, user_id=caller.user_id, provider="imap", email=email
        )
        s.add(account)
    return account.id


async def make_folder(
    db: Database, caller: Caller, account_id: uuid.UUID, name: str, role: str | None
) -> uuid.UUID:
    async with db.transaction() as s:
        folder = Folder(tenant_id=caller.tenant_id, account_id=account_id, name=name, role=role)
        s.add(folder)
    return folder.id


async def make_message(
    db: Database, caller: Caller, account_id: uuid.UUID, **fields: Any
) -> uuid.UUID:
    """A stored message; `minutes_ago` sets its sort time."""
    ago = fields.pop("minutes_ago", 0)
    at = datetime.now(UTC) - timedelta(minutes=ago)
    values: dict[str, Any] = {
        "tenant_id": caller.tenant_id,
        "account_id": account_id,
        "provider_id": f"p-{uuid.uuid4().hex}",
        "subject": "hello",
        "from_email": "x@example.com",
        "date": at,
        "sort_at": at,
        "to_addrs": [{"name": "Ana", "email": "ana@example.com"}],
        **fields,
    }
    async with db.transaction() as s:
        message = Message(**values)
        s.add(message)
    return message.id


async def make_synced_account(
    db: Database, settings: Any, caller: Caller, host: str = "127.0.0.1"
) -> uuid.UUID:
    """An IMAP account on `host` that has synced: it proves the host for its tenant (account
    verification then reports that host's failures in detail)."""
    from database.models import Credential
    from services.crypto import encrypt_json

    server = {"host": host, "port": 993, "security": "tls", "username": "u", "password": "p"}
    async with db.transaction() as s:
        account = Account(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            provider="imap",
            email=f"synced-{uuid.uuid4().hex[:6]}@example.com",
            last_sync_at=datetime.now(UTC),
        )
        s.add(account)
        await s.flush()
        secrets = {"imap": server, "smtp": {**server, "port": 587}}
        s.add(
            Credential(
                tenant_id=caller.tenant_id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, secrets),
            )
        )
    return account.id
