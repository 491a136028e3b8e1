"""Webhook to stored message, end to end, and memory of the API and a worker child.

A real uvicorn API and a real Celery worker (one prefork child) on a private database and
Redis: first single messages one at a time (latency from POST to the row existing, with the
bare ack latency of the same request as the floor), then a burst drained by the worker, with
the RSS of the API process and the worker child printed before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench.common import database_url, scratch_database
from services.events.webhooks import sign
from tests.peers import (
    Process,
    RedisServer,
    celery_worker,
    free_port,
    queues_of,
    uvicorn_api,
    wait_port,
)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-" + uuid.uuid4().hex[:8]
GRANT = "bench-grant"
SINGLES = int(os.environ.get("BENCH_PIPELINE_SINGLES", "100"))
BURST = int(os.environ.get("BENCH_PIPELINE_BURST", "2000"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def body(message_id: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "type": "message.created",
            "id": uuid.uuid4().hex,
            "time": int(time.time()),
            "source": "/google/emails/realtime",
            "data": {
                "application_id": "bench",
                "object": {
                    "id": message_id,
                    "grant_id": GRANT,
                    "object": "message",
                    "subject": "bench",
                    "from": [{"email": "a@example.org"}],
                    "to": [{"email": "b@example.com"}],
                    "body": "<p>" + "words " * 50 + "</p>",
                    "folders": ["INBOX"],
                    "date": int(time.time()),
                },
            },
        }
    ).encode()


async def seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        tenant, user = uuid.uuid4(), uuid.uuid4()
        await conn.execute("INSERT INTO tenant (id, name) VALUES ($1, 'bench')", tenant)
        await conn.execute(
            'INSERT INTO "user" (id, tenant_id, email) VALUES ($1, $2, $3)',
            user,
            tenant,
            "bench@example.com",
        )
        await conn.execute(
            "INSERT INTO account (id, tenant_id, user_id, provider, email, status, grant_id,"
            " sync_interval_s, settings) VALUES ($1, $2, $3, 'nylas', 'bench@example.com',"
            " 'active', $4, 300, '{}')",
            uuid.uuid4(),
            tenant,
            user,
            GRANT,
        )
    finally:
        await conn.close()


async def run(api: str, dsn: str, api_pid: int, worker_pid: int) -> None:
    conn = await asyncpg.connect(dsn)
    async with httpx.AsyncClient(base_url=api) as client:

        async def post(mid: str) -> float:
            raw = body(mid)
            t0 = time.perf_counter()
            r = await client.post(
                "/webhooks/nylas", content=raw, headers={"x-nylas-signature": sign(SECRET, raw)}
            )
            assert r.status_code == 200, r.text
            return t0

        for i in range(20):  # warm up both processes
            await post(f"warm-{i}")
        await asyncio.sleep(1)
        acks, stored = [], []
        for i in range(SINGLES):
            mid = f"single-{i}"
            t0 = await post(mid)
            acks.append((time.perf_counter() - t0) * 1000)
            while not await conn.fetchval("SELECT 1 FROM message WHERE provider_id = $1", mid):
                await asyncio.sleep(0.001)
            stored.append((time.perf_counter() - t0) * 1000)
        child = children(worker_pid)
        before = (rss_mb(api_pid), [rss_mb(c) for c in child])
        start = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def burst_one(i: int) -> None:
            async with sem:
                await post(f"burst-{i}")

        await asyncio.gather(*(burst_one(i) for i in range(BURST)))
        posted = time.perf_counter() - start
        while (
            await conn.fetchval("SELECT count(*) FROM message WHERE provider_id LIKE 'burst-%'")
            < BURST
        ):
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - start
        after = (rss_mb(api_pid), [rss_mb(c) for c in children(worker_pid)])
    await conn.close()

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(len(xs) * p / 100))]

    print(
        f"{'one at a time (n=' + str(SINGLES) + ')':<28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
    )
    print(
        f"{'floor: webhook ack':<28} {statistics.median(acks):>8.1f} "
        f"{q(acks, 90):>8.1f} {q(acks, 99):>8.1f}"
    )
    print(
        f"{'webhook -> message row':<28} {statistics.median(stored):>8.1f} {q(stored, 90):>8.1f} "
        f"{q(stored, 99):>8.1f}   (goal p50 < 100 ms)"
    )
    print(
        f"burst of {BURST}: posted in {posted:.1f}s, all stored after {drained:.1f}s "
        f"({BURST / drained:.0f} messages/s through one worker child)"
    )
    print(
        f"RSS MB before/after the burst: API {before[0]:.0f} -> {after[0]:.0f} (goal < 150); "
        f"worker children {[round(x) for x in before[1]]} -> {[round(x) for x in after[1]]} "
        "(goal < 200)"
    )


def main() -> None:
    redis = RedisServer().start()
    procs: list[Process] = []
    try:
        with scratch_database("postroom_bench_pipe") as db:
            env = {
                **os.environ,
                "POSTROOM_DATABASE_URL": database_url(db),
                "POSTROOM_REDIS_URL": redis.url,
                "POSTROOM_NYLAS_WEBHOOK_SECRET": SECRET,
                "POSTROOM_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
            dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
            asyncio.run(seed(dsn))
            port = free_port()
            api = uvicorn_api(env, port).start()
            procs.append(api)
            # INFO: the worker's readiness line is an INFO line (and production logs at INFO).
            worker_env = {**env, "POSTROOM_LOG_LEVEL": "INFO"}
            worker = celery_worker(
                worker_env, name="bench", queues=queues_of("short"), concurrency=1
            )
            procs.append(worker.start())
            wait_port(port, 30)
            worker.wait_log("ready.", 60)
            assert api.proc and worker.proc
            asyncio.run(run(f"http://127.0.0.1:{port}", dsn, api.proc.pid, worker.proc.pid))
            for p in procs:
                p.stop()
    finally:
        for p in procs:
            p.stop()
        redis.stop()
