"""A webhook storm: BENCH_STORM_N signed notifications as fast as one client can send them.

A real uvicorn API and `make worker`'s layout (a short worker and a bulk worker, 2 processes
each) on a private database and Redis. The storm is mostly `message.created` of distinct
messages, plus `message.updated` bursts on a few hot messages (BENCH_STORM_HOT messages, 10
updates each), as a mailbox rule or a bulk flag change produces. Reported: the ack latency
(p50/p99), non-2xx answers, how long until the last notification's event is final, and the
events per second drained, and how many tasks (classify and rules of the new messages) were
still queued at that moment.

The floor, in the same run on the same worker layout: a bare Celery task per notification
that INSERTs its message row through asyncpg (bench/storm_floor_app.py), fed straight to the
lanes, timed from the first publish to the last row.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import redis

from bench.bench_pipeline import GRANT, seed
from bench.common import database_url, scratch_database
from bench.loadgen import build_request, run_closed
from services.events.webhooks import sign
from tests.peers import Process, RedisServer, Workers, free_port, queues_of, uvicorn_api, wait_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-" + uuid.uuid4().hex[:8]
N = int(os.environ.get("BENCH_STORM_N", "20000"))
HOT = int(os.environ.get("BENCH_STORM_HOT", "200"))
UPDATES_PER_HOT = 10
CONCURRENCY = int(os.environ.get("BENCH_STORM_CONCURRENCY", "64"))
FINAL = "('succeeded', 'ignored', 'coalesced', 'dead', 'cancelled')"


def message(mid: str, *, subject: str, unread: bool) -> dict[str, object]:
    return {
        "id": mid,
        "grant_id": GRANT,
        "object": "message",
        "subject": subject,
        "from": [{"email": "a@example.org"}],
        "to": [{"email": "b@example.com"}],
        "body": "<p>" + "words " * 50 + "</p>",
        "folders": ["INBOX"],
        "unread": unread,
        "date": int(time.time()),
    }


def notifications() -> list[dict[str, object]]:
    """N notifications: HOT * 10 updates on hot messages spread among the new messages."""
    now = int(time.time())
    updates = [
        ("message.updated", message(f"hot-{h}", subject=f"v{u}", unread=u % 2 == 0), now - 20 + u)
        for u in range(UPDATES_PER_HOT)
        for h in range(HOT)
    ]
    created = [
        ("message.created", message(f"new-{i}", subject="storm", unread=True), now)
        for i in range(N - len(updates))
    ]
    out: list[dict[str, object]] = []
    step = max(1, len(created) // max(1, len(updates)))
    for i, c in enumerate(created):
        out.append(c)  # type: ignore[arg-type]
        if i % step == 0 and updates:
            out.append(updates.pop(0))  # type: ignore[arg-type]
    out.extend(updates)  # type: ignore[arg-type]
    return [
        {
            "specversion": "1.0",
            "type": kind,
            "id": uuid.uuid4().hex,
            "time": t,
            "source": "/google/emails/realtime",
            "data": {"application_id": "bench", "object": obj},
        }
        for kind, obj, t in out  # type: ignore[misc]
    ]


def requests(port: int, notes: list[dict[str, object]]) -> list[bytes]:
    out = []
    for note in notes:
        raw = json.dumps(note).encode()
        out.append(
            build_request(
                "127.0.0.1", port, "/webhooks/nylas", raw, {"x-nylas-signature": sign(SECRET, raw)}
            )
        )
    return out


async def wait_until(conn: asyncpg.Connection, sql: str, target: int, limit_s: float) -> float:
    start = time.perf_counter()
    while await conn.fetchval(sql) < target:
        if time.perf_counter() - start > limit_s:
            raise TimeoutError(f"not reached in {limit_s}s: {sql}")
        await asyncio.sleep(0.2)
    return time.perf_counter()


def queued(r: redis.Redis) -> int:
    keys = [k for k in r.keys("short*") + r.keys("bulk*")]
    return int(sum(r.llen(k) for k in keys if r.type(k) == b"list"))


async def storm(port: int, dsn: str, r: redis.Redis) -> dict[str, float]:
    notes = notifications()
    raws = requests(port, notes)
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        result = await run_closed("127.0.0.1", port, raws, CONCURRENCY)
        acked = time.perf_counter()
        done = await wait_until(
            conn,
            "SELECT count(*) FROM event WHERE task_name = 'postroom.events.process'"
            f" AND status IN {FINAL}",
            len(notes),
            3600,
        )
        # What the storm left behind: classify and rules of the new messages (not waited for).
        behind = queued(r)
        coalesced = await conn.fetchval("SELECT count(*) FROM event WHERE status = 'coalesced'")
        once = await conn.fetchval(
            "SELECT count(*) FROM event WHERE task_name = 'postroom.events.process'"
            " AND jsonb_array_length(history) = 1"
        )
        hot_ok = await conn.fetchval(
            "SELECT count(*) FROM message WHERE provider_id LIKE 'hot-%' AND subject = $1",
            f"v{UPDATES_PER_HOT - 1}",
        )
    finally:
        await conn.close()
    return {
        "n": len(notes),
        "p50": result.p50,
        "p99": result.pct(99),
        "non2xx": result.errors,
        "ack_s": acked - t0,
        "last_s": done - t0,
        "behind": behind,
        "coalesced": coalesced,
        "once": once,
        "hot_ok": hot_ok,
    }


async def tenant_account(dsn: str) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT tenant_id, id FROM account WHERE grant_id = $1", GRANT)
        return str(row["tenant_id"]), str(row["id"])
    finally:
        await conn.close()


def floor(env: dict[str, str], dsn: str, redis_url: str) -> dict[str, float]:
    """The same number of bare INSERT tasks through the same worker layout."""
    os.environ["POSTROOM_REDIS_URL"] = redis_url
    from settings import Settings
    from worker.app import make_celery

    app = make_celery(Settings(), publisher_only=True)
    workers = [
        Process(
            f"worker-floor-{cls}",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "bench.storm_floor_app",
                "worker",
                "-Q",
                queues,
                "-c",
                "2",
                "-l",
                "INFO",
                "-n",
                f"floor-{cls}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            env,
        )
        for cls, queues in (("short", queues_of("short", "periodic")), ("bulk", queues_of("bulk")))
    ]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_log("ready.", 60)
        tenant, account = asyncio.run(tenant_account(dsn))
        notes = notifications()

        async def count() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(
                    await conn.fetchval("SELECT count(*) FROM message WHERE subject = 'floor'")
                )
            finally:
                await conn.close()

        t0 = time.perf_counter()
        for i, note in enumerate(notes):
            obj = dict(note["data"]["object"])  # type: ignore[index]
            obj["id"], obj["subject"] = f"floor-{i}", "floor"
            app.send_task(
                "bench.storm.floor_store",
                args=(tenant, account, obj),
                queue=f"short.{i % 8}",
                retry=False,
            )
        published = time.perf_counter()
        while asyncio.run(count()) < len(notes):
            time.sleep(0.2)
        done = time.perf_counter()
    finally:
        for w in workers:
            w.stop()
    return {"n": len(notes), "publish_s": published - t0, "last_s": done - t0}


def main() -> None:
    server = RedisServer().start()
    procs: list[Process] = []
    try:
        with scratch_database("postroom_bench_storm") as db:
            env = {
                **os.environ,
                "POSTROOM_DATABASE_URL": database_url(db),
                "POSTROOM_REDIS_URL": server.url,
                "POSTROOM_NYLAS_WEBHOOK_SECRET": SECRET,
                "POSTROOM_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
            dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
            asyncio.run(seed(dsn))
            port = free_port()
            api = uvicorn_api(env, port).start()
            procs.append(api)
            workers = Workers({**env, "POSTROOM_LOG_LEVEL": "INFO"}, name="storm").start()
            wait_port(port, 30)
            workers.wait_ready(60)
            r = redis.Redis.from_url(server.url)
            try:
                s = asyncio.run(storm(port, dsn, r))
            finally:
                workers.stop()
                api.stop()
            f = floor({**env, "POSTROOM_LOG_LEVEL": "INFO"}, dsn, server.url)
    finally:
        for p in procs:
            p.stop()
        server.stop()

    print(
        f"storm of {s['n']:.0f} signed webhooks ({HOT} hot messages x {UPDATES_PER_HOT} updates),"
        f" {CONCURRENCY} connections, one uvicorn process, make worker's layout"
    )
    print(f"{'':<34} {'postroom':>12} {'floor':>12}")
    print(f"{'ack p50 / p99 ms':<34} {s['p50']:>5.1f} / {s['p99']:<5.1f} {'-':>12}")
    print(f"{'non-2xx answers':<34} {s['non2xx']:>12.0f} {'-':>12}")
    print(f"{'all acknowledged after s':<34} {s['ack_s']:>12.1f} {f['publish_s']:>12.1f}")
    print(f"{'last event processed after s':<34} {s['last_s']:>12.1f} {f['last_s']:>12.1f}")
    print(f"{'events/s drained':<34} {s['n'] / s['last_s']:>12.0f} {f['n'] / f['last_s']:>12.0f}")
    print(f"{'tasks still queued then (classify..)':<34} {s['behind']:>12.0f} {'-':>12}")
    print(
        f"coalesced: {s['coalesced']:.0f} of {HOT * UPDATES_PER_HOT} updates;"
        f" events with exactly one attempt: {s['once']:.0f} of {s['n']:.0f};"
        f" hot messages holding their newest state: {s['hot_ok']:.0f} of {HOT}"
    )
