"""Event drain: a burst of message.created webhooks, stored, classified and rules applied.

postroom runs as `make api` + `make worker` (API 2 processes, worker-short and worker-bulk with
2 children each) and then as `make dev` lays it out (API 1 process, the two workers and beat),
each on a fresh account of one private database and Redis. A client posts the burst 32 at a
time while the workers drain it; the clock runs from the first POST to the last message's
`classify-message` run finishing (classified, the account's rules applied). The floor, in the
same run: a bare Celery task (bench/drain_floor.py) doing one asyncpg INSERT of the message,
with the same 2 children, fed the same notifications straight from the client.
RSS of every worker child is sampled through the burst. After the last message is done the
bench also waits until the short lanes hold no task message (`queue empty s`): messages of
events done in another's batch (services/nylas/batch.py) are revoked and dropped as the
workers reach them, and the next layout must not inherit them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from bench.common import database_url, scratch_database
from bench.loadgen import Result, build_request, run_closed
from bench.plots import line_chart
from services.events.webhooks import sign
from tests.peers import Process, RedisServer, free_port, wait_port
from worker.config import PRIORITY_STEPS, Queue, lane_names
from worker.dispatch import queue_key

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-" + uuid.uuid4().hex[:8]
EVENTS = int(os.environ.get("BENCH_DRAIN_EVENTS", "10000"))
CONCURRENCY = 32
SAMPLE_S = 0.25
TIMEOUT_S = float(os.environ.get("BENCH_DRAIN_TIMEOUT_S", "1800"))


@dataclass
class Drain:
    name: str
    seconds: float = 0.0
    # Until the short lanes held no task message any more: the messages of events done in
    # another's batch are revoked, and workers drop them as the queue reaches them.
    empty_s: float | None = None
    acks: Result | None = None
    curve: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[int, list[float]]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return EVENTS / self.seconds if self.seconds else 0.0


def notification(grant: str, message_id: str) -> bytes:
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
                    "grant_id": grant,
                    "object": "message",
                    "subject": f"Minutes of the meeting {message_id}",
                    "from": [{"name": "A Colleague", "email": "a@example.org"}],
                    "to": [{"email": "b@example.com"}],
                    "body": "<p>"
                    + "Thanks for the notes, the review moves to Thursday afternoon. " * 8
                    + "</p>",
                    "folders": ["INBOX"],
                    "unread": True,
                    "date": int(time.time()),
                },
            },
        }
    ).encode()


async def seed(dsn: str, grant: str) -> tuple[str, str]:
    """A tenant, user and Nylas account, with two rules: spam to Junk, and a label."""
    conn = await asyncpg.connect(dsn)
    try:
        tenant, user, account = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await conn.execute("INSERT INTO tenant (id, name) VALUES ($1, $2)", tenant, grant)
        await conn.execute(
            'INSERT INTO "user" (id, tenant_id, email) VALUES ($1, $2, $3)',
            user,
            tenant,
            f"{grant}@example.com",
        )
        await conn.execute(
            "INSERT INTO account (id, tenant_id, user_id, provider, email, status, grant_id,"
            " sync_interval_s, settings) VALUES ($1, $2, $3, 'nylas', $4, 'active', $5, 300, '{}')",
            account,
            tenant,
            user,
            f"{grant}@example.com",
            grant,
        )
        for position, (name, condition, action) in enumerate(
            [
                ("spam to junk", {"is_spam": True}, {"type": "move", "folder_role": "junk"}),
                (
                    "tag colleagues",
                    {"from_domain": "example.org"},
                    {"type": "label", "label": "team"},
                ),
            ]
        ):
            await conn.execute(
                "INSERT INTO rule (id, tenant_id, account_id, name, condition, action, position,"
                " enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, true,"
                " now(), now())",
                uuid.uuid4(),
                tenant,
                account,
                name,
                json.dumps(condition),
                json.dumps(action),
                position,
            )
        return str(tenant), str(account)
    finally:
        await conn.close()


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [d for k in kids for d in descendants(k)]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cmdline(pid: int) -> bytes:
    """A process's command line; empty when it has just exited (a child being replaced)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_children(procs: list[Process]) -> list[int]:
    """Prefork children: celery processes whose parent is a celery process."""
    pids = [d for p in procs if p.proc for d in [p.proc.pid, *descendants(p.proc.pid)]]
    celery = {p for p in pids if b"celery" in _cmdline(p)}
    parents = {}
    for p in celery:
        try:
            parents[p] = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return sorted(p for p, parent in parents.items() if parent in celery)


async def watch(
    dsn: str, query: str, args: tuple[object, ...], run: Drain, workers: list[Process]
) -> None:
    """Sample the done count (and children's RSS every 2,000 done) until all EVENTS are done."""
    conn = await asyncpg.connect(dsn)
    start = time.perf_counter()
    next_rss = 0
    try:
        while True:
            done = int(await conn.fetchval(query, *args))
            now = time.perf_counter() - start
            run.curve.append((now, done))
            if done >= next_rss or done >= EVENTS:
                run.rss.append((done, [round(rss_mb(p)) for p in worker_children(workers)]))
                next_rss = (done // 2000 + 1) * 2000
            if done >= EVENTS:
                run.seconds = now
                return
            if now > TIMEOUT_S:
                raise TimeoutError(f"{run.name}: {done} of {EVENTS} done after {now:.0f} s")
            await asyncio.sleep(SAMPLE_S)
    finally:
        await conn.close()


def make(target: str, env: dict[str, str], *extra: str) -> Process:
    return Process(f"bench-{target}", ["make", "-s", target, *extra], env).start()


async def drive_postroom(
    run: Drain,
    dsn: str,
    redis_url: str,
    port: int,
    grant: str,
    account: str,
    workers: list[Process],
) -> None:
    reqs = [
        build_request(
            "127.0.0.1", port, "/webhooks/nylas", b, {"X-Nylas-Signature": sign(SECRET, b)}
        )
        for b in (notification(grant, f"{grant}-{i}") for i in range(EVENTS))
    ]
    query = (
        "SELECT count(*) FROM event WHERE account_id = $1 AND type = 'workflow.classify-message'"
        " AND status = 'succeeded'"
    )
    start = time.perf_counter()
    watcher = asyncio.create_task(watch(dsn, query, (uuid.UUID(account),), run, workers))
    run.acks = await run_closed("127.0.0.1", port, reqs, CONCURRENCY)
    await watcher
    run.empty_s = await queue_empty(redis_url, start)


async def queue_empty(redis_url: str, start: float) -> float:
    """Seconds from `start` until no short lane holds a message (and none is in hand): the
    next layout must not inherit this one's revoked messages."""
    client = redis.Redis.from_url(redis_url)
    keys = [queue_key(q, p) for q in lane_names(Queue.short) for p in PRIORITY_STEPS]
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            pipe.hlen("unacked")
            if sum(pipe.execute()) == 0:
                return time.perf_counter() - start
            if time.perf_counter() - start > TIMEOUT_S:
                raise TimeoutError("the short lanes did not empty")
            await asyncio.sleep(SAMPLE_S)
    finally:
        client.close()


def run_postroom(name: str, env: dict[str, str], dsn: str, dev: bool) -> Drain:
    grant = f"drain-{name}"
    _, account = asyncio.run(seed(dsn, grant))
    port = free_port()
    web = "1" if dev else "2"  # the Procfile starts the API with WEB_CONCURRENCY=1
    procs = [make("api", {**env, "WEB_CONCURRENCY": web}, f"PORT={port}", "HOST=127.0.0.1")]
    workers = [make("worker-short", env), make("worker-bulk", env)]
    if dev:
        procs.append(make("beat", env))
    procs += workers
    run = Drain(name)
    try:
        wait_port(port, timeout=60)
        for w in workers:
            w.wait_log("ready.", 90)
        time.sleep(1.0)
        redis_url = env["POSTROOM_REDIS_URL"]
        asyncio.run(drive_postroom(run, dsn, redis_url, port, grant, account, workers))
    finally:
        for p in procs:
            p.stop()
    return run


def run_floor(env: dict[str, str], dsn: str) -> Drain:
    """The floor's tasks are queued before its worker starts (one publishing thread is slower
    than the worker), and its clock runs from the first row stored: its pure drain rate."""
    grant = "drain-floor"
    tenant, account = asyncio.run(seed(dsn, grant))
    os.environ.update({k: env[k] for k in ("POSTROOM_DATABASE_URL", "POSTROOM_REDIS_URL")})
    from bench.drain_floor import app

    for i in range(EVENTS):
        body = notification(grant, f"{grant}-{i}").decode()
        app.send_task("floor.store", args=[body, tenant, account], queue="floor")
    worker = Process(
        "bench-floor-worker",
        [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "bench.drain_floor",
            "worker",
            "-Q",
            "floor",
            "-c",
            "2",
            "-l",
            "WARNING",
            "-n",
            f"floor-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    ).start()
    run = Drain("floor")
    try:
        asyncio.run(
            watch(
                dsn,
                "SELECT count(*) FROM message WHERE account_id = $1",
                (uuid.UUID(account),),
                run,
                [worker],
            )
        )
    finally:
        worker.stop()
    # From the first row stored: the worker's start-up is not part of the drain.
    first = next(i for i, (_, done) in enumerate(run.curve) if done > 0)
    t0, _ = run.curve[max(0, first - 1)]
    run.curve = [(t - t0, d) for t, d in run.curve[max(0, first - 1) :]]
    run.seconds -= t0
    return run


def report(runs: list[Drain]) -> None:
    floor = runs[0]
    print(
        f"{'run':<22} {'events':>7} {'seconds':>8} {'drained/s':>10} {'x floor':>8} "
        f"{'acks/s during':>13} {'queue empty s':>13}"
    )
    for r in runs:
        acks = f"{r.acks.rps:>13.0f}" if r.acks else f"{'-':>13}"
        empty = f"{r.empty_s:>13.1f}" if r.empty_s is not None else f"{'-':>13}"
        print(
            f"{r.name:<22} {EVENTS:>7} {r.seconds:>8.1f} {r.rate:>10.0f} "
            f"{r.rate / floor.rate:>8.2f} {acks} {empty}"
        )
    print("goal: >= 400 message.created/s end to end, and >= 0.5x the floor")
    for r in runs:
        points = ", ".join(f"{done}: {mbs}" for done, mbs in r.rss)
        print(f"worker children RSS MB at events done ({r.name}): {points}")
    line_chart(
        "bench-drain",
        [
            (
                f"Drain of a burst of {EVENTS} message.created",
                "seconds since the first webhook",
                "events done (stored, classified, rules)",
                {r.name: ([t for t, _ in r.curve], [d for _, d in r.curve]) for r in runs},
            )
        ],
        note="floor: bare Celery task, one asyncpg INSERT per message (bench/drain_floor.py)",
    )


def main() -> None:
    redis = RedisServer().start()
    metrics_dir = tempfile.mkdtemp(prefix="postroom-bench-metrics-")
    try:
        with scratch_database("postroom_bench_drain") as db:
            env = {
                **os.environ,
                "POSTROOM_DATABASE_URL": database_url(db),
                "POSTROOM_REDIS_URL": redis.url,
                "POSTROOM_NYLAS_WEBHOOK_SECRET": SECRET,
                "POSTROOM_LOG_LEVEL": "INFO",  # the workers' readiness line is an INFO line
                "PYTHONPATH": str(ROOT),
                "METRICS_DIR": metrics_dir,
                "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                "SKIP_INSTALL": "1",
                "TMPDIR": metrics_dir,  # beat's schedule file, private to this run
            }
            dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
            runs = [run_floor(env, dsn)]
            layouts = os.environ.get("BENCH_DRAIN_LAYOUTS", "api+worker,dev").split(",")
            for layout in layouts:
                runs.append(run_postroom(layout, env, dsn, dev=layout == "dev"))
    finally:
        redis.stop()
    report(runs)
