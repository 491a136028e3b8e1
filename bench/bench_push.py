"""IMAP push: how many idle accounts one listener holds, and what it costs in memory.

N users in Dovecot (1,000 by default; BENCH_PUSH_ACCOUNTS), N IMAP accounts in a scratch
database, one listener (`python -m worker.listener`, the process `make watch` runs) with
capacity N. Measured: time from start until every account is in IDLE, the listener's RSS
before it claims anything and once all are in IDLE, and Dovecot's count of connections.
The figures go into docs/operations.md "Push".
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

from bench.common import database_url, scratch_database
from tests.imap_fixtures import Dovecot
from tests.peers import Process, RedisServer

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.0/8,::1"
ACCOUNTS = int(os.environ.get("BENCH_PUSH_ACCOUNTS", "1000"))

# Dovecot's defaults stop near 100-1,000 connections; one imap process per connection.
LIMITS = """
default_process_limit = {n}
default_client_limit = {clients}
mail_max_userip_connections = 20
service imap {{
  process_limit = {n}
}}
service imap-login {{
  process_limit = 200
}}
"""


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _accounts(env: dict[str, str], dovecot: Dovecot) -> None:
    from database.engine import Database
    from database.models import Account, Credential, Provider, Tenant, User
    from services.crypto import encrypt_json
    from settings import Settings

    settings = Settings(
        database_url=env["POSTROOM_DATABASE_URL"],
        credential_keys=env["POSTROOM_CREDENTIAL_KEYS"],
    )  # type: ignore[arg-type]
    db = Database.from_settings(settings, pool_size=2)
    try:
        async with db.transaction() as s:
            tenant = Tenant(name=f"bench-push-{uuid.uuid4().hex[:6]}")
            s.add(tenant)
            await s.flush()
            owner = User(tenant_id=tenant.id, email="owner@example.com")
            s.add(owner)
            await s.flush()
            for email in dovecot.users:
                account = Account(
                    tenant_id=tenant.id,
                    user_id=owner.id,
                    provider=Provider.imap,
                    email=email,
                    sync_interval_s=3600,
                )
                s.add(account)
                await s.flush()
                token = encrypt_json(settings, dovecot.credentials(email))
                s.add(Credential(tenant_id=tenant.id, account_id=account.id, ciphertext=token))
    finally:
        await db.dispose()


def _count(proc: Process, event: str) -> int:
    return proc.log().count(f'"event": "{event}"')


def main() -> None:
    if shutil.which("dovecot") is None:
        print("bench push needs Dovecot: apt-get install -y dovecot-imapd", file=sys.stderr)
        return
    n = ACCOUNTS
    redis = RedisServer().start()
    dovecot = Dovecot(
        users=[], spare_users=n, extra_conf=LIMITS.format(n=n + 100, clients=max(4 * n, 4000))
    ).start()
    env = {
        **os.environ,
        "POSTROOM_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        "POSTROOM_REDIS_URL": redis.url,
        "POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS": LOOPBACK,
        "POSTROOM_PUSH_CAPACITY": str(n),
        # Only IDLE is measured: no worker runs here to take syncs.
        "POSTROOM_PUSH_SYNC_ON_CONNECT": "false",
        "POSTROOM_LOG_JSON": "true",
        "PYTHONPATH": str(ROOT),
    }
    listener: Process | None = None
    try:
        with scratch_database("postroom_bench_push", env) as name:
            env["POSTROOM_DATABASE_URL"] = database_url(name)
            asyncio.run(_accounts(env, dovecot))
            listener = Process("watch", [sys.executable, "-m", "worker.listener"], env)
            started = time.monotonic()
            listener.start()
            listener.wait_log('"push_listener_started"', timeout=60)
            ready = time.monotonic()
            assert listener.proc is not None
            base_kib = rss_kib(listener.proc.pid)
            base_cpu = cpu_s(listener.proc.pid)
            while _count(listener, "push_idling") < n:
                if time.monotonic() - started > 600:
                    raise TimeoutError(f"only {_count(listener, 'push_idling')} of {n} in IDLE")
                time.sleep(0.2)
            all_idle_s = time.monotonic() - started
            claimed_idle_s = time.monotonic() - ready
            idle_kib = rss_kib(listener.proc.pid)
            ramp_cpu = cpu_s(listener.proc.pid) - base_cpu
            connections = sum(dovecot.connections().values())
            time.sleep(10)  # steady state: nothing but IDLE
            steady_kib = rss_kib(listener.proc.pid)
            steady_cpu = cpu_s(listener.proc.pid) - base_cpu - ramp_cpu
            reconnects = _count(listener, "push_reconnect")
            stop = time.monotonic()
            listener.stop(signal.SIGTERM, timeout=120)
            stop_s = time.monotonic() - stop
            print(f"accounts in IDLE            {n} (Dovecot counts {connections} connections)")
            print(f"time until all in IDLE      {all_idle_s:.1f} s from start")
            print(f"                            {claimed_idle_s:.1f} s once imports were done")
            print(f"listener RSS before claims  {base_kib / 1024:.1f} MiB")
            print(f"listener RSS, all in IDLE   {idle_kib / 1024:.1f} MiB")
            print(f"listener RSS, 10 s later    {steady_kib / 1024:.1f} MiB")
            print(f"per account                 {(steady_kib - base_kib) / n:.1f} KiB")
            print(f"listener CPU, ramp-up       {ramp_cpu:.1f} s")
            print(f"listener CPU, 10 s of IDLE  {steady_cpu:.2f} s")
            print(f"reconnects while starting   {reconnects}")
            print(f"clean stop (LOGOUT, release) {stop_s:.1f} s")
    finally:
        if listener is not None:
            listener.stop(signal.SIGKILL)
        dovecot.stop()
        redis.stop()


if __name__ == "__main__":
    main()
