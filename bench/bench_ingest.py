"""Webhook ingest: postroom (`make api`, production flags) vs a hand-written floor, same run.

Measured from outside with `wrk` (Debian package `wrk`), the way an outside client sees it:
both servers get signed notifications with unique ids, at rising concurrency, level by level
alternating between the two so both see the same machine; then each is driven at half of its
own peak (paced wrk connections) to read its p99 ack. The whole comparison is repeated
BENCH_INGEST_ROUNDS times (on a shared machine only ratios taken in the same round hold), and
the load average is printed with each round.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.common import database_url as _database_url
from bench.common import scratch_database
from bench.loadgen import build_request
from bench.plots import line_chart
from services.events.webhooks import sign
from tests.peers import Process, RedisServer, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LUA = Path(__file__).with_name("wrk_ingest.lua")
SECRET = "bench-secret-" + uuid.uuid4().hex[:8]
CONCURRENCY = [1, 8, 32, 64]
SECONDS = float(os.environ.get("BENCH_INGEST_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_INGEST_ROUNDS", "2"))
# Connections of the paced half-peak run; each waits about connections/rate between requests.
PACED_CONNECTIONS = 32
NAMES = ("floor", "postroom")


def body(now: int) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "type": "message.created",
            "source": "/google/emails/realtime",
            "id": uuid.uuid4().hex,
            "time": now,
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
                    "date": now,
                },
            },
        }
    ).encode()


def notifications(n: int, host: str, port: int) -> list[bytes]:
    """n signed requests as raw HTTP/1.1 (bench.ingest_cpu calls the apps with these)."""
    now = int(time.time())
    out = []
    for _ in range(n):
        b = body(now)
        headers = {"X-Nylas-Signature": sign(SECRET, b)}
        out.append(build_request(host, port, "/webhooks/nylas", b, headers))
    return out


def write_requests(path: Path, n: int) -> None:
    """n signed notifications with fresh ids, one `signature<TAB>body` line each."""
    now = int(time.time())
    with path.open("wb") as f:
        for _ in range(n):
            b = body(now)
            f.write(sign(SECRET, b).encode() + b"\t" + b + b"\n")


@dataclass
class Run:
    """One wrk run against one server."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    timeouts: int
    p50: float
    p90: float
    p99: float
    max: float
    started: float
    ended: float
    sent_file: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors + self.timeouts


def wrk(port: int, connections: int, work: Path, *, expect_rps: float, pace_ms: float = 0.0) -> Run:
    n = int(max(20_000, expect_rps * SECONDS * 2))
    path = work / f"requests-{uuid.uuid4().hex[:8]}.txt"
    write_requests(path, n)
    threads = min(2, connections)
    argv = [
        shutil.which("wrk") or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{SECONDS:g}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}/webhooks/nylas",
        "--",
        str(path),
        str(threads),
    ]
    env = {**os.environ, "WRK_PACE_MS": f"{pace_ms:.3f}" if pace_ms else "0"}
    started = time.time()
    out = subprocess.run(
        argv, capture_output=True, text=True, env=env, check=True, timeout=SECONDS + 120
    )
    ended = time.time()
    path.unlink()
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    r = json.loads(line.removeprefix("WRK_JSON "))
    run = Run(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        non2xx=r["non2xx"],
        socket_errors=r["socket_errors"],
        timeouts=r["timeouts"],
        p50=r["p50_us"] / 1000,
        p90=r["p90_us"] / 1000,
        p99=r["p99_us"] / 1000,
        max=r["max_us"] / 1000,
        started=started,
        ended=ended,
        sent_file=n,
    )
    if run.requests > n * 0.95:
        print(f"warning: {run.requests} requests from a file of {n}: ids may repeat", flush=True)
    return run


def env_for(redis: RedisServer, db: str, metrics_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "POSTROOM_DATABASE_URL": _database_url(db),
        "POSTROOM_REDIS_URL": redis.url,
        "POSTROOM_NYLAS_WEBHOOK_SECRET": SECRET,
        "POSTROOM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        # A directory of this run's own, not the host's shared one (`make api`'s default).
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
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


@dataclass
class Round:
    load: float
    levels: dict[str, list[tuple[int, Run]]]
    half: dict[str, Run]
    batch: dict[int, float]  # concurrency -> postroom rows per INSERT

    def peak(self, name: str) -> float:
        return max(r.rps for _, r in self.levels[name])


def measure(ports: dict[str, int], work: Path, db: str, number: int) -> Round:
    """Levels alternate between the two servers (which goes first alternates too)."""
    load = os.getloadavg()[0]
    levels: dict[str, list[tuple[int, Run]]] = {name: [] for name in ports}
    for i, c in enumerate(CONCURRENCY):
        order = list(ports) if (i + number) % 2 == 0 else list(reversed(ports))
        for name in order:
            expect = max([r.rps for _, r in levels[name]], default=2000.0)
            levels[name].append((c, wrk(ports[name], c, work, expect_rps=expect)))
    half: dict[str, Run] = {}
    for name, port in ports.items():
        peak = max(r.rps for _, r in levels[name])
        # Each paced connection waits ~connections/rate between answer and next request; its
        # own answer time (the p50 at 8 connections) comes off that wait.
        latency = next(r.p50 for c, r in levels[name] if c == 8)
        pace = max(0.0, PACED_CONNECTIONS / (peak / 2) * 1000 - latency)
        half[name] = wrk(port, PACED_CONNECTIONS, work, expect_rps=peak / 2, pace_ms=pace)
    batch = {c: batch_size(db, r.started, r.ended) for c, r in levels["postroom"]}
    return Round(load=load, levels=levels, half=half, batch=batch)


def batch_size(db: str, start: float, end: float) -> float:
    """Rows per INSERT of postroom's rows in a time window: a statement's rows share their
    received_at (now(), the transaction's start); the floor's rows have no task id."""
    row = asyncio.run(
        fetchrow(
            db,
            "SELECT count(*), count(DISTINCT received_at) FROM event"
            " WHERE current_task_id IS NOT NULL"
            " AND received_at BETWEEN to_timestamp($1) AND to_timestamp($2)",
            start,
            end,
        )
    )
    return float(row[0]) / row[1] if row[1] else 0.0


def count_events(db: str) -> int:
    return int(asyncio.run(fetchrow(db, "SELECT count(*) FROM event"))[0])


async def fetchrow(db: str, query: str, *args: object) -> asyncpg.Record:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}")
    try:
        return await conn.fetchrow(query, *args)
    finally:
        await conn.close()


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("bench ingest needs wrk: apt-get install -y wrk")
    redis = RedisServer().start()
    ports = {"floor": free_port(), "postroom": free_port()}
    procs: list[Process] = []
    rounds: list[Round] = []
    work = Path(tempfile.mkdtemp(prefix="postroom-bench-ingest-"))
    try:
        with scratch_database("postroom_bench_ingest") as db:
            env = env_for(redis, db, str(work / "metrics"))
            for name, port in ports.items():
                procs.append(start_server(name, env, port))
            for port in ports.values():  # warm up: connections, prepared statements
                wrk(port, 16, work, expect_rps=3000)
            for number in range(ROUNDS):
                rounds.append(measure(ports, work, db, number))
                report(rounds[-1], number)
            stored = count_events(db)
            for proc in procs:
                proc.stop()
    finally:
        for proc in procs:
            proc.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    answered = sum(
        r.requests - r.non2xx
        for rnd in rounds
        for name in NAMES
        for r in [*(x for _, x in rnd.levels[name]), rnd.half[name]]
    )
    print(f"\nevent rows stored: {stored} (200 answers in the measured runs: {answered})")
    print(
        "\nround | load | floor peak | postroom peak | ratio | floor p99 @half | postroom p99 @half"
    )
    for i, rnd in enumerate(rounds):
        f, p = rnd.peak("floor"), rnd.peak("postroom")
        print(
            f"{i + 1:>5} | {rnd.load:>4.1f} | {f:>10.0f} | {p:>13.0f} | {p / f:>5.2f} | "
            f"{rnd.half['floor'].p99:>12.2f} ms | {rnd.half['postroom'].p99:>15.2f} ms"
        )
    ratios = [rnd.peak("postroom") / rnd.peak("floor") for rnd in rounds]
    print(
        f"peak ratio median {statistics.median(ratios):.2f} (goal >= 1.2); postroom p99 at half "
        f"peak median {statistics.median(r.half['postroom'].p99 for r in rounds):.2f} ms "
        f"(goal < 25 ms); load average now {os.getloadavg()[0]:.1f}"
    )
    plot(rounds[-1])


def report(rnd: Round, number: int) -> None:
    print(f"\nround {number + 1} (load average {rnd.load:.1f} at its start)")
    print(
        f"{'conns':>5} | {'floor req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'postroom req/s':>14} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5} | rows/INSERT"
    )
    for (c, f), (_, p) in zip(rnd.levels["floor"], rnd.levels["postroom"], strict=True):
        print(
            f"{c:>5} | {f.rps:>11.0f} {f.p50:>7.2f} {f.p99:>7.2f} | "
            f"{p.rps:>14.0f} {p.p50:>7.2f} {p.p99:>7.2f} | {p.rps / f.rps:>5.2f} | "
            f"{rnd.batch[c]:.1f}"
        )
    fpeak, ppeak = rnd.peak("floor"), rnd.peak("postroom")
    print(f"peak: floor {fpeak:.0f} req/s, postroom {ppeak:.0f} req/s, ratio {ppeak / fpeak:.2f}")
    for name in NAMES:
        o = rnd.half[name]
        print(
            f"{name} at half its peak ({o.rps:.0f} req/s achieved over {PACED_CONNECTIONS} paced "
            f"connections): p50 {o.p50:.2f} ms, p90 {o.p90:.2f} ms, p99 {o.p99:.2f} ms, "
            f"errors {o.errors}"
        )
    errors = sum(r.errors for name in NAMES for _, r in rnd.levels[name])
    print(f"non-200 answers or socket errors at the levels: {errors}", flush=True)


def plot(rnd: Round) -> None:
    """docs/bench-ingest.png: throughput, and p50/p99 latency, against concurrency."""
    levels = rnd.levels
    throughput = {
        name: ([c for c, _ in rows], [r.rps for _, r in rows]) for name, rows in levels.items()
    }
    latency = {
        f"{name} {label}": ([c for c, _ in rows], [get(r) for _, r in rows])
        for name, rows in levels.items()
        for label, get in (("p50", lambda r: r.p50), ("p99", lambda r: r.p99))
    }
    line_chart(
        "bench-ingest",
        [
            ("Webhook ingest throughput (wrk)", "concurrent connections", "requests/s", throughput),
            ("Webhook ingest latency (wrk)", "concurrent connections", "ms", latency),
        ],
        logx=True,
        note="floor: bare Starlette + asyncpg INSERT + Redis LPUSH (bench/floor_app.py)",
    )
