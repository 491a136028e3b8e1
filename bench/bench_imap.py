"""IMAP sync: postroom (Dovecot -> PostgreSQL) vs mbsync (Dovecot -> Maildir), same mailbox.

Dovecot is filled with >= 3,000 SpamAssassin corpus messages across three folders. Both
sides first read the mailbox once (warm caches), then: a full sync each, then a no-change
re-sync each (median of several runs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from tests.imap_fixtures import PASSWORD, Dovecot
from tests.peers import migrate

LOOPBACK = "127.0.0.0/8,::1"  # the local Dovecot; see POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS

ROOT = Path(__file__).resolve().parent.parent
PLAN = {"INBOX": ("easy-ham-1", 2500), "Junk": ("spam-1", 500), "Archive": ("hard-ham-1", 250)}
NO_CHANGE_RUNS = 5
USER = "bench@example.com"

_MBSYNC = """\
IMAPAccount bench
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account bench

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel bench
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
"""


async def _fill(dovecot: Dovecot) -> int:
    from tests.imap_support import append_corpus

    counts = await append_corpus(dovecot, USER, PLAN)
    return sum(counts.values())


async def _warm(dovecot: Dovecot) -> None:
    """Read every body once so neither side pays for Dovecot building its caches."""
    from services.imap.client import ImapClient, ImapConfig

    config = ImapConfig.from_credentials(dovecot.credentials(USER), allowed_private_hosts=LOOPBACK)
    async with ImapClient(config) as client:
        for box in await client.list_mailboxes():
            await client.select(box.name, readonly=True)
            async for _ in client.uid_fetch("1:*", "UID BODY.PEEK[]"):
                pass


def _mbsync(conf: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(["mbsync", "-c", str(conf), "-q", "-a"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"mbsync failed: {proc.stderr.strip()[-500:]}")
    return elapsed


async def _postroom(env: dict[str, str], dovecot: Dovecot) -> tuple[float, list[float], int]:
    from database.engine import Database
    from database.models import Account, Credential, Provider, Tenant, User
    from services.crypto import encrypt_json
    from services.imap.sync import run_sync
    from settings import Settings

    settings = Settings(
        database_url=env["POSTROOM_DATABASE_URL"],
        credential_keys=env["POSTROOM_CREDENTIAL_KEYS"],
        allowed_private_mail_hosts=LOOPBACK,  # Dovecot listens on loopback
    )  # type: ignore[arg-type]
    db = Database.from_settings(settings, pool_size=2)
    try:
        async with db.transaction() as s:
            tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:6]}")
            s.add(tenant)
            await s.flush()
            user = User(tenant_id=tenant.id, email=USER)
            s.add(user)
            await s.flush()
            account = Account(
                tenant_id=tenant.id, user_id=user.id, provider=Provider.imap, email=USER
            )
            s.add(account)
            await s.flush()
            s.add(
                Credential(
                    tenant_id=tenant.id,
                    account_id=account.id,
                    ciphertext=encrypt_json(settings, dovecot.credentials(USER)),
                )
            )

        async def once() -> tuple[float, Any]:
            start = time.perf_counter()
            result = await run_sync(db, settings, tenant_id=tenant.id, account_id=account.id)
            return time.perf_counter() - start, result

        full, result = await once()
        no_change = []
        for _ in range(NO_CHANGE_RUNS):
            elapsed, again = await once()
            assert again.new == again.updated == again.deleted == 0, again
            no_change.append(elapsed)
        return full, no_change, result.new
    finally:
        await db.dispose()


def main() -> None:
    if shutil.which("mbsync") is None or shutil.which("dovecot") is None:
        print(
            "bench imap needs Dovecot and mbsync: apt-get install -y dovecot-imapd isync",
            file=sys.stderr,
        )
        return
    db_name = f"postroom_bench_imap_{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "POSTROOM_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}",
        "POSTROOM_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        "PYTHONPATH": str(ROOT),
    }
    migrate(env)
    dovecot = Dovecot(users=[USER]).start()
    work = Path(tempfile.mkdtemp(prefix="postroom-bench-imap-"))
    try:
        total = asyncio.run(_fill(dovecot))
        asyncio.run(_warm(dovecot))
        (work / "maildir").mkdir()
        conf = work / "mbsyncrc"
        conf.write_text(
            _MBSYNC.format(
                port=dovecot.port, user=USER, password=PASSWORD, maildir=work / "maildir"
            )
        )
        conf.chmod(0o600)
        os.environ["HOME"] = str(work)  # mbsync keeps its state under the Maildir and $HOME
        mb_full = _mbsync(conf)
        mb_none = statistics.median(_mbsync(conf) for _ in range(NO_CHANGE_RUNS))
        pr_full, pr_none_runs, stored = asyncio.run(_postroom(env, dovecot))
        pr_none = statistics.median(pr_none_runs)
        mb_files = sum(1 for _ in (work / "maildir").rglob("cur/*")) + sum(
            1 for _ in (work / "maildir").rglob("new/*")
        )
        print(
            f"mailbox: {total} corpus messages in {len(PLAN)} folders "
            f"(postroom stored {stored}, mbsync wrote {mb_files} files)"
        )
        print("| measure | postroom | mbsync | ratio | goal |")
        print("|---|---|---|---|---|")
        print(
            f"| full sync, messages/s | {stored / pr_full:,.0f} ({pr_full:.2f} s) | "
            f"{mb_files / mb_full:,.0f} ({mb_full:.2f} s) | "
            f"{(stored / pr_full) / (mb_files / mb_full):.2f}x | >= 0.5x |"
        )
        print(
            f"| no-change re-sync, median of {NO_CHANGE_RUNS} | {pr_none * 1000:.1f} ms | "
            f"{mb_none * 1000:.1f} ms | {pr_none / mb_none:.2f}x the time | <= 1x |"
        )
    finally:
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)',
                "postgres",
            ],
            check=False,
            capture_output=True,
        )


if __name__ == "__main__":
    main()
