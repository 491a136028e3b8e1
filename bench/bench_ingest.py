"""Webhook ingest: postroom (`make api`, production flags) vs a hand-written floor, same run.

Both servers get the same signed notifications with unique ids from the same client, at
rising concurrency; then each is driven at half of its peak rate to read its p99 ack.
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

from bench.common import database_url, scratch_database
from bench.loadgen import Result, build_request, run_closed, run_open
from bench.plots import line_chart
from services.events.webhooks import sign
from tests.peers import Process, RedisServer, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-secret-" + uuid.uuid4().hex[:8]
CONCURRENCY = [1, 8, 32, 64]
PER_LEVEL = int(os.environ.get("BENCH_INGEST_REQUESTS", "3000"))


def notifications(n: int, host: str, port: int) -> list[bytes]:
    out = []
    for _ in range(n):
        body = json.dumps(
            {
                "specversion": "1.0",
                "type": "message.created",
                "source": "/google/emails/realtime",
                "id": uuid.uuid4().hex,
                "time": int(time.time()),
                "webhook_delivery_attempt": 1,
                "data": {
                    "application_id": "bench",
                    "object": {
                        "id": uuid.uuid4().hex,
                        "grant_id": "bench-grant",
                        "object": "message",
                        "subject": "Benchmark message",
                        "from": [{"email": "a@example.org"}],
                        "to": [{"email": "b@example.com"}],
                        "body": "<p>" + "lorem ipsum " * 40 + "</p>",
                        "folders": ["INBOX"],
                        "unread": True,
                        "date": int(time.time()),
                    },
                },
            }
        ).encode()
        out.append(
            build_request(
                host, port, "/webhooks/nylas", body, {"X-Nylas-Signature": sign(SECRET, body)}
            )
        )
    return out


def env_for(redis: RedisServer, db: str) -> dict[str, str]:
    return {
        **os.environ,
        "POSTROOM_DATABASE_URL": database_url(db),
        "POSTROOM_REDIS_URL": redis.url,
        "POSTROOM_NYLAS_WEBHOOK_SECRET": SECRET,
        "POSTROOM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        # `make bench` checked the install already; the servers it starts need not check again.
        "SKIP_INSTALL": "1",
    }


def start_server(name: str, env: dict[str, str], port: int) -> Process:
    if name == "postroom":
        argv = ["make", "-s", "api", f"PORT={port}", "HOST=127.0.0.1"]
    else:
        argv = [
            str(VENV_BIN / "uvicorn"),
            "bench.floor_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--workers",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    proc = Process(f"bench-{name}", argv, {**env, "WEB_CONCURRENCY": "2"}).start()
    wait_port(port, timeout=60)
    time.sleep(1.0)  # both uvicorn workers up
    return proc


Measured = tuple[list[tuple[int, Result]], Result, float]


async def measure(ports: dict[str, int]) -> dict[str, Measured]:
    """Levels alternate between the two servers so both see the same machine noise."""
    levels: dict[str, list[tuple[int, Result]]] = {name: [] for name in ports}
    for port in ports.values():  # warm up
        await run_closed("127.0.0.1", port, notifications(400, "127.0.0.1", port), 16)
    for c in CONCURRENCY:
        for name, port in ports.items():
            reqs = notifications(PER_LEVEL, "127.0.0.1", port)
            levels[name].append((c, await run_closed("127.0.0.1", port, reqs, c)))
    out: dict[str, Measured] = {}
    for name, port in ports.items():
        peak = max(r.rps for _, r in levels[name])
        count = max(500, int(peak / 2 * 5))
        reqs = notifications(count, "127.0.0.1", port)
        out[name] = (levels[name], await run_open("127.0.0.1", port, reqs, peak / 2), peak)
    return out


async def count_events(db: str) -> int:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}")
    try:
        return int(await conn.fetchval("SELECT count(*) FROM event"))
    finally:
        await conn.close()


def main() -> None:
    redis = RedisServer().start()
    ports = {"floor": free_port(), "postroom": free_port()}
    procs = []
    try:
        with scratch_database("postroom_bench_ingest") as db:
            env = env_for(redis, db)
            for name, port in ports.items():
                procs.append(start_server(name, env, port))
            results = asyncio.run(measure(ports))
            stored = asyncio.run(count_events(db))
            for proc in procs:
                proc.stop()
    finally:
        for proc in procs:
            proc.stop()
        redis.stop()

    print(
        f"{'concurrency':>11} | {'floor req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'postroom req/s':>14} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5}"
    )
    for (c, f), (_, p) in zip(results["floor"][0], results["postroom"][0], strict=True):
        print(
            f"{c:>11} | {f.rps:>11.0f} {f.p50:>7.2f} {f.pct(99):>7.2f} | "
            f"{p.rps:>14.0f} {p.p50:>7.2f} {p.pct(99):>7.2f} | {p.rps / f.rps:>5.2f}"
        )
    fpeak, ppeak = results["floor"][2], results["postroom"][2]
    print(
        f"peak: floor {fpeak:.0f} req/s, postroom {ppeak:.0f} req/s, ratio {ppeak / fpeak:.2f} "
        "(goal >= 0.80)"
    )
    for name in ("floor", "postroom"):
        o = results[name][1]
        print(
            f"{name} at half its peak ({o.rps:.0f} req/s offered for {o.seconds:.1f}s): "
            f"p50 {o.p50:.2f} ms, p99 {o.pct(99):.2f} ms, errors {o.errors}"
            + (" (goal p99 < 25 ms)" if name == "postroom" else "")
        )
    errors = sum(r.errors for name in results for _, r in results[name][0])
    print(f"non-200 answers: {errors}; event rows stored: {stored}")
    plot(results)


def plot(results: dict[str, Measured]) -> None:
    """docs/bench-ingest.png: throughput, and p50/p99 latency, against concurrency."""
    levels = {name: results[name][0] for name in ("floor", "postroom")}
    throughput = {
        name: ([c for c, _ in rows], [r.rps for _, r in rows]) for name, rows in levels.items()
    }
    latency = {
        f"{name} {label}": ([c for c, _ in rows], [get(r) for _, r in rows])
        for name, rows in levels.items()
        for label, get in (("p50", lambda r: r.p50), ("p99", lambda r: r.pct(99)))
    }
    line_chart(
        "bench-ingest",
        [
            ("Webhook ingest throughput", "concurrent connections", "requests/s", throughput),
            ("Webhook ingest latency", "concurrent connections", "ms", latency),
        ],
        logx=True,
        note="floor: bare Starlette + asyncpg INSERT + Redis LPUSH (bench/floor_app.py)",
    )
