"""CPU per webhook inside one process: postroom's ASGI app against the floor's, same database.

`python -m bench.ingest_cpu` (not part of `make bench`). Both apps run in this process on one
event loop, on a private database and Redis, and are called directly as ASGI apps (no HTTP,
no client): what is left is each app's own work per notification, its driver and Redis
client included. Rounds alternate between the two so both see the same machine; CPU time
(time.process_time), not wall time, so the other processes of a shared machine count less.
BENCH_CPU_CONCURRENCY (default 16) requests are in flight at once, as under load;
1 measures one request at a time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from bench.bench_ingest import SECRET, notifications
from bench.common import database_url, scratch_database
from tests.peers import RedisServer

ROUNDS = int(os.environ.get("BENCH_CPU_ROUNDS", "10"))
PER_ROUND = int(os.environ.get("BENCH_CPU_REQUESTS", "600"))
CONCURRENCY = int(os.environ.get("BENCH_CPU_CONCURRENCY", "16"))


def scope_and_body(request: bytes) -> tuple[dict[str, Any], bytes]:
    """The ASGI scope and body of one request as bench.loadgen.build_request wrote it."""
    head, body = request.split(b"\r\n\r\n", 1)
    headers = []
    for line in head.split(b"\r\n")[1:]:
        name, value = line.split(b":", 1)
        headers.append((name.strip().lower(), value.strip()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/nylas",
        "raw_path": b"/webhooks/nylas",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": headers,
        "state": {},
    }
    return scope, body


async def call(app: Any, request: bytes) -> int:
    scope, body = scope_and_body(request)
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def one_round(app: Any, requests: list[bytes]) -> float:
    """CPU milliseconds per request for this batch, CONCURRENCY at a time."""
    pending = iter(requests)
    statuses: list[int] = []

    async def lane() -> None:
        for request in pending:
            statuses.append(await call(app, request))

    started = time.process_time()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    spent = time.process_time() - started
    if set(statuses) != {200}:
        raise RuntimeError(f"answers other than 200: {sorted(set(statuses))}")
    return spent / len(requests) * 1000


async def measure(db: str, redis: RedisServer) -> dict[str, list[float]]:
    os.environ.update(
        {
            "POSTROOM_DATABASE_URL": database_url(db),
            "POSTROOM_REDIS_URL": redis.url,
            "POSTROOM_NYLAS_WEBHOOK_SECRET": SECRET,
            "POSTROOM_LOG_LEVEL": "WARNING",
        }
    )
    import gc

    import bench.floor_app as floor
    from api.app import create_app
    from settings import Settings

    postroom = create_app(Settings())
    apps = {"floor": floor.app, "postroom": postroom}
    out: dict[str, list[float]] = {name: [] for name in apps}
    async with (
        postroom.router.lifespan_context(postroom),
        floor.app.router.lifespan_context(floor.app),
    ):
        gc.freeze()
        for app in apps.values():  # warm up: connections, prepared statements, scripts
            await one_round(app, notifications(200, "127.0.0.1", 8080))
        for _ in range(ROUNDS):
            for name, app in apps.items():
                out[name].append(await one_round(app, notifications(PER_ROUND, "127.0.0.1", 8080)))
    return out


def main() -> None:
    import uvloop

    redis = RedisServer().start()
    try:
        with scratch_database("postroom_bench_ingest_cpu") as db:
            results = uvloop.run(measure(db, redis))
    finally:
        redis.stop()
    print(f"{ROUNDS} rounds of {PER_ROUND} webhooks, {CONCURRENCY} in flight, CPU ms per webhook")
    for name, values in results.items():
        print(f"{name:>9}: median {statistics.median(values):.3f}, min {min(values):.3f}")
    ratios = [p / f for p, f in zip(results["postroom"], results["floor"], strict=True)]
    print(f"postroom / floor per round: median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
