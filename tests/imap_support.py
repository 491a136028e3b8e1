"""Helpers for IMAP tests: fill a user's folders from the corpus, create IMAP and POP3 accounts
pointing at the session's Dovecot (the `dovecot` and `mailbox_user` fixtures are in
tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from tests.imap_fixtures import Dovecot

CORPUS_PLAN_BIG = {
    "INBOX": ("easy-ham-1", 300),
    "Junk": ("spam-1", 150),
    "Archive": ("hard-ham-1", 70),
}


async def append_corpus(
    dovecot: Dovecot,
    user: str,
    plan: dict[str, tuple[str, int]],
    *,
    extra: dict[str, list[bytes]] | None = None,
) -> dict[str, int]:
    """Fill `user`'s folders from the corpus (MULTIAPPEND in chunks) -> {folder: count}."""
    from scripts.corpus import messages, raw_message
    from services.imap.client import ImapClient, ImapConfig

    out: dict[str, int] = {}
    config = ImapConfig.from_credentials(dovecot.credentials(user))
    async with ImapClient(config) as client:
        for folder, (corpus, count) in plan.items():
            raws = [raw_message(p) for p in list(messages(corpus))[:count]]
            for i in range(0, len(raws), 100):
                await client.append(folder, raws[i : i + 100])
            out[folder] = len(raws)
        for folder, raws in (extra or {}).items():
            await client.append(folder, raws)
            out[folder] = out.get(folder, 0) + len(raws)
    return out


async def create_imap_account(
    db: Any,
    settings: Any,
    dovecot: Dovecot,
    user: str,
    *,
    security: str = "none",
    tenant: Any = None,
) -> Any:
    """Tenant, user and an IMAP account whose encrypted credential points at Dovecot."""
    from database.models import Account, Credential, Provider
    from services.crypto import encrypt_json
    from tests.factories import create_tenant, create_user

    tenant = tenant or await create_tenant(db)
    owner = await create_user(db, tenant)
    async with db.transaction() as s:
        account = Account(tenant_id=tenant.id, user_id=owner.id, provider=Provider.imap, email=user)
        s.add(account)
        await s.flush()
        token = encrypt_json(settings, dovecot.credentials(user, security=security))
        s.add(Credential(tenant_id=tenant.id, account_id=account.id, ciphertext=token))
    return account


async def create_pop3_account(
    db: Any,
    settings: Any,
    dovecot: Dovecot,
    user: str,
    *,
    security: str = "none",
    tenant: Any = None,
) -> Any:
    """Tenant, user and a POP3 account whose encrypted credential points at Dovecot's POP3."""
    from database.models import Account, Credential, Provider
    from services.crypto import encrypt_json
    from tests.factories import create_tenant, create_user

    tenant = tenant or await create_tenant(db)
    owner = await create_user(db, tenant)
    async with db.transaction() as s:
        account = Account(tenant_id=tenant.id, user_id=owner.id, provider=Provider.pop3, email=user)
        s.add(account)
        await s.flush()
        token = encrypt_json(settings, dovecot.pop3_credentials(user, security=security))
        s.add(Credential(tenant_id=tenant.id, account_id=account.id, ciphertext=token))
    return account
