"""Outbound events: the delivery process (`make deliver`) beside a floor, in the same run.

One local receiver (uvicorn + uvloop + httptools, its own process) answers 200 to every POST.
- Floor: a bare httpx.AsyncClient loop (uvloop) posting the same envelope bodies, signed the
  same way, with the same number of requests in flight, N times.
- Deliverer: `python -m worker.deliverer` against a scratch database with ENDPOINTS tenants of
  one endpoint each; N tenant events (unnumbered, as effects write them) are committed at once
  and the clock runs until every delivery is recorded as succeeded. That includes numbering,
  fan-out, claims and the batched writes, not only the POSTs.
Printed: both rates, their ratio, and the deliverer's RSS before, half-way and at the end.
The figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from cryptography.fernet import Fernet

from bench.common import database_url, scratch_database
from tests.peers import Process

ROOT = Path(__file__).resolve().parent.parent
N = int(os.environ.get("BENCH_DELIVER_N", "10000"))
ENDPOINTS = int(os.environ.get("BENCH_DELIVER_ENDPOINTS", "8"))
# 64 in flight in all: on a busy 2-core machine more only adds latency (a request that
# waits 15 s for CPU times out and is retried), not throughput.
PER_ENDPOINT = int(os.environ.get("BENCH_DELIVER_PER_ENDPOINT", "8"))
IN_FLIGHT = ENDPOINTS * PER_ENDPOINT

# A message.created payload of the usual size (the list's message object, no body).
DATA = {
    "message": {
        "id": str(uuid.uuid4()),
        "account_id": str(uuid.uuid4()),
        "folder": "INBOX",
        "subject": "Quarterly report: the figures you asked for",
        "from": [{"name": "Ana Lima", "email": "ana@example.com"}],
        "to": [{"name": "Bo Chen", "email": "bo@example.org"}],
        "snippet": "Hi Bo, attached are the numbers for the third quarter, with the notes " * 2,
        "date": "2026-12-07T10:00:00+00:00",
        "flags": ["seen"],
        "labels": [],
        "spam_score": 0.02,
        "thread_id": str(uuid.uuid4()),
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("the receiver did not start")


async def floor(url: str) -> float:
    """Deliveries per second of a bare httpx loop: same bodies, same signing, same fan-in."""
    from services.tenant_events import signing
    from services.tenant_events.envelope import envelope

    key = signing.secret_key(signing.new_secret())
    remaining = N
    done = 0

    class Row:
        def __init__(self, seq: int) -> None:
            self.id = uuid.uuid4()
            self.type = "message.created"
            self.created_at = datetime.now(UTC)
            self.seq = seq
            self.data = DATA

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining, done
        while remaining > 0:
            remaining -= 1
            row = Row(remaining)
            body = orjson.dumps(envelope(row))
            headers = signing.headers([key], str(row.id), int(time.time()), body)
            async with client.stream("POST", url, content=body, headers=headers) as r:
                async for _ in r.aiter_raw():
                    pass
                if 200 <= r.status_code < 300:
                    done += 1

    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        start = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(IN_FLIGHT)))
        elapsed = time.monotonic() - start
    assert done == N, done
    return N / elapsed


async def seed(env: dict[str, str], url: str) -> list[uuid.UUID]:
    from database.engine import Database
    from database.repositories.tenant_events import endpoints as endpoints_repo
    from services.tenant_events import endpoints as endpoints_svc
    from services.tenant_events.signing import new_secret
    from settings import Settings

    settings = Settings(
        database_url=env["POSTROOM_DATABASE_URL"], credential_keys=env["POSTROOM_CREDENTIAL_KEYS"]
    )
    db = Database.from_settings(settings, pool_size=2)
    tenants = []
    try:
        async with db.transaction() as s:
            import sqlalchemy as sa

            for i in range(ENDPOINTS):
                tid = uuid.uuid4()
                await s.execute(
                    sa.text("INSERT INTO tenant (id, name) VALUES (:i, :n)"),
                    {"i": tid, "n": f"bench-deliver-{i}-{tid.hex[:6]}"},
                )
                await endpoints_repo.create(
                    s,
                    tenant_id=tid,
                    url=f"{url}/t{i}",
                    event_types=None,
                    description=None,
                    secret=endpoints_svc.seal(settings, new_secret()),
                )
                tenants.append(tid)
    finally:
        await db.dispose()
    return tenants


async def emit_all(env: dict[str, str], tenants: list[uuid.UUID]) -> None:
    import asyncpg

    conn = await asyncpg.connect(env["POSTROOM_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        await conn.execute(
            """
            INSERT INTO tenant_event (id, tenant_id, type, data, created_at)
            SELECT gen_random_uuid(), ($1::uuid[])[1 + i % $2], 'message.created', $3::jsonb,
                   clock_timestamp()
            FROM generate_series(0, $4 - 1) i
            """,
            tenants,
            len(tenants),
            orjson.dumps(DATA).decode(),
            N,
        )
    finally:
        await conn.close()


async def attempts(env: dict[str, str]) -> int:
    import asyncpg

    conn = await asyncpg.connect(env["POSTROOM_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(attempts), 0) FROM webhook_delivery"))
    finally:
        await conn.close()


async def watch(env: dict[str, str], pid: int) -> tuple[float, list[float]]:
    """Seconds from the commit of N events until all are delivered, and RSS half-way and at
    the end. One connection, a look every 0.5 s: the watcher must not cost PostgreSQL much."""
    import asyncpg

    conn = await asyncpg.connect(env["POSTROOM_DATABASE_URL"].replace("+asyncpg", ""))
    rss: list[float] = []
    try:
        start = time.monotonic()
        while True:
            n = int(
                await conn.fetchval(
                    "SELECT count(*) FROM webhook_delivery WHERE status = 'succeeded'"
                )
            )
            if not rss and n >= N // 2:
                rss.append(rss_mib(pid))
            if n >= N:
                return time.monotonic() - start, rss
            if time.monotonic() - start > 1200:
                raise TimeoutError(f"{n} of {N} delivered after 1200 s")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def run_deliverer(env: dict[str, str], url: str) -> tuple[float, list[float]]:
    tenants = asyncio.run(seed(env, url))
    proc = Process("deliver", [sys.executable, "-m", "worker.deliverer"], env).start()
    try:
        time.sleep(2.0)  # started, idle, its first polls done
        assert proc.proc is not None
        pid = proc.proc.pid
        rss = [rss_mib(pid)]
        asyncio.run(emit_all(env, tenants))
        elapsed, seen = asyncio.run(watch(env, pid))
        rss += [*seen, rss_mib(pid)]
        tries = asyncio.run(attempts(env))
        print(f"deliverer attempts: {tries:,} for {N:,} deliveries")
        return N / elapsed, rss
    finally:
        proc.stop()


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver = Process(
        "deliver-receiver",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.deliver_receiver:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ],
        {**os.environ, "PYTHONPATH": str(ROOT)},
    ).start()
    try:
        wait_port(port)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "POSTROOM_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
            "POSTROOM_ALLOWED_PRIVATE_WEBHOOK_HOSTS": "127.0.0.0/8",
            "POSTROOM_WEBHOOK_ENDPOINT_IN_FLIGHT": str(PER_ENDPOINT),
            "POSTROOM_LOG_LEVEL": "WARNING",
            # A timeout under CPU starvation is retried soon, not after the default 5 min.
            "POSTROOM_WEBHOOK_RETRY_SCHEDULE": "1,1,1,1,1",
        }
        import uvloop

        floor_rate = uvloop.run(floor(f"{url}/floor"))
        print(f"floor (bare httpx, {IN_FLIGHT} in flight): {floor_rate:,.0f} deliveries/s")
        with scratch_database("bench_deliver", env) as name:
            env["POSTROOM_DATABASE_URL"] = database_url(name)
            rate, rss = run_deliverer(env, url)
        # The floor again: on a shared machine the load moves within a run, and the ratio is
        # taken against the mean of the floor before and after.
        after = uvloop.run(floor(f"{url}/floor"))
        print(f"floor again after the deliverer: {after:,.0f} deliveries/s")
        floor_rate = (floor_rate + after) / 2
        print(
            f"deliverer ({ENDPOINTS} endpoints x {PER_ENDPOINT} in flight, {N:,} events): "
            f"{rate:,.0f} deliveries/s = {rate / floor_rate:.2f}x the floor (mean of both)"
        )
        print("deliverer RSS MiB: idle {:.0f}, half-way {:.0f}, end {:.0f}".format(*rss))
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
