"""POP3 sync vs IMAP sync of the same maildrop: Dovecot serves one Maildir over both.

300 SpamAssassin corpus messages are delivered into INBOX; the mailbox is read once (warm
caches); then a full sync each (POP3: UIDL + pipelined RETR; IMAP: INBOX only) into accounts
of their own, and a no-change re-sync each (median of several runs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.fernet import Fernet

from bench.common import database_url, scratch_database
from tests.imap_fixtures import Dovecot

LOOPBACK = "127.0.0.0/8,::1"  # the local Dovecot; see POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS
COUNT = 300
NO_CHANGE_RUNS = 3
USER = "bench@example.com"


def _fill(dovecot: Dovecot) -> int:
    from scripts.corpus import messages, raw_message

    paths = list(messages("easy-ham-1"))[:COUNT]
    for path in paths:
        dovecot.deliver(USER, raw_message(path))
    return len(paths)


async def _warm(dovecot: Dovecot) -> None:
    """Read every body once so neither protocol pays for Dovecot building its caches."""
    from services.pop3.client import Pop3Client, Pop3Config

    config = Pop3Config.from_credentials(
        dovecot.pop3_credentials(USER), allowed_private_hosts=LOOPBACK
    )
    async with Pop3Client(config) as client:
        await client.retrieve([n for n, _ in await client.uidl()])


async def _account(db: Any, settings: Any, provider: str, secrets: dict[str, Any]) -> Any:
    from database.models import Account, Credential, Tenant, User
    from services.crypto import encrypt_json

    async with db.transaction() as s:
        tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:6]}")
        s.add(tenant)
        await s.flush()
        user = User(tenant_id=tenant.id, email=USER)
        s.add(user)
        await s.flush()
        account = Account(tenant_id=tenant.id, user_id=user.id, provider=provider, email=USER)
        s.add(account)
        await s.flush()
        s.add(
            Credential(
                tenant_id=tenant.id,
                account_id=account.id,
                ciphertext=encrypt_json(settings, secrets),
            )
        )
    return account


async def _timed(sync: Callable[[], Awaitable[Any]]) -> tuple[float, list[float], int]:
    start = time.perf_counter()
    result = await sync()
    full = time.perf_counter() - start
    again = []
    for _ in range(NO_CHANGE_RUNS):
        start = time.perf_counter()
        second = await sync()
        again.append(time.perf_counter() - start)
        assert second.new == 0, second
    return full, again, result.new


async def _measure(env: dict[str, str], dovecot: Dovecot) -> dict[str, tuple[float, float, int]]:
    from database.engine import Database
    from services.imap.sync import run_sync
    from services.pop3.sync import run_pop3_sync
    from settings import Settings

    settings = Settings(
        database_url=env["POSTROOM_DATABASE_URL"],
        credential_keys=env["POSTROOM_CREDENTIAL_KEYS"],
        allowed_private_mail_hosts=LOOPBACK,
    )  # type: ignore[arg-type]
    db = Database.from_settings(settings, pool_size=2)
    try:
        pop3 = await _account(db, settings, "pop3", dovecot.pop3_credentials(USER))
        imap = await _account(db, settings, "imap", dovecot.credentials(USER))
        out = {}
        for name, sync in (
            (
                "POP3",
                lambda: run_pop3_sync(db, settings, tenant_id=pop3.tenant_id, account_id=pop3.id),
            ),
            (
                "IMAP",
                lambda: run_sync(
                    db, settings, tenant_id=imap.tenant_id, account_id=imap.id, folder="INBOX"
                ),
            ),
        ):
            full, again, stored = await _timed(sync)
            out[name] = (full, statistics.median(again), stored)
        return out
    finally:
        await db.dispose()


def main() -> None:
    env = {**os.environ, "POSTROOM_CREDENTIAL_KEYS": Fernet.generate_key().decode()}
    dovecot = Dovecot(users=[USER]).start()
    try:
        with scratch_database("postroom_bench_pop3", env) as name:
            env["POSTROOM_DATABASE_URL"] = database_url(name)
            total = _fill(dovecot)
            asyncio.run(_warm(dovecot))
            figures = asyncio.run(_measure(env, dovecot))
    finally:
        dovecot.stop()
    print(f"maildrop: {total} corpus messages in INBOX, served by one Dovecot over both")
    print("| protocol | full sync | messages/s | no-change re-sync (median) |")
    print("|---|---|---|---|")
    for proto, (full, again, stored) in figures.items():
        print(
            f"| {proto} | {full:.2f} s ({stored} stored) | {stored / full:,.0f} | "
            f"{again * 1000:.1f} ms |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print("usage: python -m bench pop3", file=sys.stderr)
    main()
