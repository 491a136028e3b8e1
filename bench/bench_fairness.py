"""Starvation: tenant A queues 5,000 tasks, then tenant B queues one. How long does B wait?

Side by side in one run, on one real Celery worker with postroom's broker settings (prefork,
2 processes, prefetch 1, acks_late, kombu round robin over the queues it consumes):
- two choices: each task goes to the shorter of its tenant's two candidate lanes
  (worker.config.lane_choices, worker.dispatch.shortest_lane: what worker.dispatch publishes);
- lanes: each task goes to its tenant's home lane (worker.config.lane_queue: plain hashing,
  what was published before two choices); the worker consumes all short lanes;
- FIFO: every task into one queue (what one queue per class gives).
Tenants are fresh random ids each trial, so A and B share a lane as often as hashing makes
them (1 in LANES): those trials are counted and shown, they are the tail.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

from tests.peers import Process, RedisServer, queues_of
from worker.config import PRIORITY_STEPS, Queue, lane_choices, lane_names, lane_queue
from worker.dispatch import shortest_lane

VENV_BIN = Path(sys.executable).parent
A_TASKS = int(os.environ.get("BENCH_FAIR_A_TASKS", "5000"))
TRIALS = int(os.environ.get("BENCH_FAIR_TRIALS", "20"))
# FIFO trials each drain all of A's tasks first: fewer of them, the wait hardly varies.
FIFO_TRIALS = int(os.environ.get("BENCH_FAIR_FIFO_TRIALS", "5"))
FIFO_QUEUE = "bench.fifo"
TASK = "bench.fairness.touch"


def queue_keys(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}:{p}" for p in PRIORITY_STEPS]


def purge(r: redis.Redis) -> None:
    keys = [k for q in [*lane_names(Queue.short), FIFO_QUEUE] for k in queue_keys(q)]
    r.delete(*keys)


def trial(app: object, r: redis.Redis, *, mode: str) -> tuple[float, bool]:
    """(B's wait in seconds, whether B's task went to a lane holding A's tasks)."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    lanes = mode != "fifo"

    def queue_of(tenant: str, task_id: str) -> str:
        if mode == "fifo":
            return FIFO_QUEUE
        if mode == "two choices":
            choices = lane_choices(Queue.short, f"tenant:{tenant}", spread=task_id)
            return shortest_lane(r, choices, 0)
        return lane_queue(Queue.short, f"tenant:{tenant}", spread=task_id)

    send = app.send_task  # type: ignore[attr-defined]
    a_lanes = set()
    for _ in range(A_TASKS):
        task_id = uuid.uuid4().hex
        q = queue_of(a, task_id)
        a_lanes.add(q)
        send(TASK, args=(a,), task_id=task_id, queue=q, priority=0)
    mark = uuid.uuid4().hex
    task_id = uuid.uuid4().hex
    q = queue_of(b, task_id)
    sent = time.time()
    send(TASK, args=(b, mark), task_id=task_id, queue=q, priority=0)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = r.get(f"bench:fair:{mark}")
        if done is not None:
            wait = float(done) - sent
            break
        time.sleep(0.002)
    else:
        raise RuntimeError("tenant B's task never ran")
    purge(r)  # A's leftovers; the worker's 2 reserved ones finish on their own
    time.sleep(0.2)
    home = lane_queue(Queue.short, f"tenant:{b}", spread=task_id)
    if mode == "two choices" and home in a_lanes:
        print(f"  (B's home lane {home} held A's tasks; B went to {q})", flush=True)
    return wait, lanes and q in a_lanes


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    server = RedisServer().start()
    env = {**os.environ, "POSTROOM_REDIS_URL": server.url, "POSTROOM_LOG_LEVEL": "INFO"}
    queues = f"{queues_of('short')},{FIFO_QUEUE}"
    worker = Process(
        "worker-fair",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "bench.fair_app",
            "worker",
            "-Q",
            queues,
            "-c",
            "2",
            "-l",
            "INFO",
            "-n",
            f"fair-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    )
    try:
        os.environ["POSTROOM_REDIS_URL"] = server.url
        from settings import Settings
        from worker.app import make_celery

        app = make_celery(Settings(), publisher_only=True)
        r = redis.Redis.from_url(server.url)
        worker.start()
        worker.wait_log("ready.", 60)
        # Task length: B alone, ten times.
        lengths = []
        for _ in range(10):
            mark = uuid.uuid4().hex
            t0 = time.time()
            app.send_task(TASK, args=("solo", mark), queue=FIFO_QUEUE, priority=0)
            while r.get(f"bench:fair:{mark}") is None:
                time.sleep(0.001)
            lengths.append(float(r.get(f"bench:fair:{mark}") or 0) - t0)
        solo = statistics.median(lengths)
        results: dict[str, list[float]] = {"two choices": [], "lanes": [], "fifo": []}
        apart: list[float] = []
        shared_two = 0
        for _ in range(TRIALS):
            wait, same = trial(app, r, mode="two choices")
            print(f"two choices trial: B waited {wait * 1000:.1f} ms (shared: {same})", flush=True)
            results["two choices"].append(wait)
            shared_two += same
        for _ in range(TRIALS):
            wait, same = trial(app, r, mode="lanes")
            print(f"lanes trial: B waited {wait * 1000:.1f} ms (shared lane: {same})", flush=True)
            results["lanes"].append(wait)
            if not same:
                apart.append(wait)
        for _ in range(FIFO_TRIALS):
            wait, _same = trial(app, r, mode="fifo")
            print(f"fifo trial: B waited {wait * 1000:.1f} ms", flush=True)
            results["fifo"].append(wait)
        print(f"A queues {A_TASKS} tasks, then B queues 1; worker: 2 processes, prefetch 1")
        print(f"one task alone, publish to done: {solo * 1000:.1f} ms (median of 10)")
        results["lanes, A and B apart"] = apart
        for name, waits in results.items():
            if not waits:
                continue
            print(
                f"{name:>20}: B waits p50 {pct(waits, 50) * 1000:9.1f} ms  "
                f"p99 {pct(waits, 99) * 1000:9.1f} ms  max {max(waits) * 1000:9.1f} ms  "
                f"({len(waits)} trials; p50 = {pct(waits, 50) / solo:.1f} task-lengths)"
            )
        print(f"lanes: A and B hashed onto one lane in {TRIALS - len(apart)} of {TRIALS} trials")
        print(f"two choices: B's task went into a lane of A's in {shared_two} of {TRIALS} trials")
    finally:
        worker.stop()
        server.stop()


if __name__ == "__main__":
    main()
