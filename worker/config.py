"""Queues, priorities, routes, retry counts and the Celery app's settings: the one table both
publishers and workers read. Side-effect free (no app built, no signal connected): the API
imports it.

Redis priorities run the other way round from AMQP: kombu's Redis transport keeps one list
per priority step and BRPOPs them in ascending order, so **0 is served first**. We speak of
importance (10 = most urgent, as ARCHITECTURE.md does) and convert once, here.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Exchange
from kombu import Queue as KQueue

from database.task_names import TaskName
from settings import Settings


class Queue(enum.StrEnum):
    """Latency classes. `short` and `bulk` are each spread over LANES Redis queues (lanes)."""

    short = "short"  # webhook events, user jobs, classify, rules, send, small deletes
    bulk = "bulk"  # syncs (cut into bounded parts), mass deletes, reconcile
    periodic = "periodic"  # beat's maintenance ticks: no tenant, one queue


# Lanes per laned class. kombu's Redis transport (queue_order_strategy round_robin) moves the
# queue it just served to the end of its list, so a worker consuming short.0..short.7 serves a
# tenant alone in its lane between any two tasks of a tenant with 10,000 queued in another.
# The same on every process (publishers and workers): changing it is a redeploy of all.
LANES = 8
LANED = (Queue.short, Queue.bulk)


def lane_names(queue: Queue) -> list[str]:
    """The Redis queues of a class: `short.0` ... `short.7`; `periodic` is one queue."""
    if queue not in LANED:
        return [queue.value]
    return [f"{queue.value}.{i}" for i in range(LANES)]


def all_queues() -> list[str]:
    return [name for q in Queue for name in lane_names(q)]


def class_of(queue_name: str) -> Queue:
    """`short.3` -> Queue.short (metrics and tests group lanes by class)."""
    return Queue(queue_name.split(".", 1)[0])


def lanes_for(key: str, weight: int = 1) -> list[int]:
    """The lanes a tenant (or grant) is spread over: `weight` distinct lanes, shuffle-sharded.

    Lane i of a key is picked by sha256(key:i), skipping lanes already taken, so two tenants
    of weight 2 rarely share both their lanes. Weight 1 is plain hashing.
    """
    return list(_lanes_for(key, max(1, min(weight, LANES))))


# Every message hashes its tenant's (or grant's) lanes twice: the same few keys again and
# again on a busy API, so the answers are kept.
@functools.lru_cache(maxsize=4096)
def _lanes_for(key: str, weight: int) -> tuple[int, ...]:
    out: list[int] = []
    i = 0
    while len(out) < weight:
        digest = hashlib.sha256(f"{key}:{i}".encode()).digest()
        lane = int.from_bytes(digest[:4], "big") % LANES
        if lane not in out:
            out.append(lane)
        i += 1
    return tuple(out)


def lane_queue(queue: Queue, key: str | None, *, spread: str = "", weight: int = 1) -> str:
    """The lane of one task: among its key's lanes, the one `spread` (its task id) hashes to."""
    if queue not in LANED:
        return queue.value
    lanes = lanes_for(key or spread, weight)
    pick = int.from_bytes(hashlib.sha256(spread.encode()).digest()[:4], "big") % len(lanes)
    return f"{queue.value}.{lanes[pick]}"


def lane_choices(queue: Queue, key: str | None, *, spread: str = "", weight: int = 1) -> list[str]:
    """The lanes one task may go to, its home lane (lane_queue) first: "two choices".

    A tenant of weight w has w + 1 candidate lanes (lanes_for(key, w + 1), distinct, the first
    w are its spread lanes); the publisher takes the one with the fewest tasks ahead and, on a
    tie, the home lane. A tenant sharing a lane with a backlogged one goes to its other lane;
    only a tenant whose candidates are all crowded waits (1 in 28 for two of 8 lanes).
    """
    home = lane_queue(queue, key, spread=spread, weight=weight)
    if queue not in LANED:
        return [home]
    others = [f"{queue.value}.{i}" for i in lanes_for(key or spread, min(LANES, weight + 1))]
    return [home, *(q for q in others if q != home)]


# Every priority step gets its own Redis list, so all ten levels are real.
PRIORITY_STEPS = list(range(10))


def redis_priority(importance: int) -> int:
    """Importance 1..10 (10 most urgent) -> kombu Redis priority 0..9 (0 served first)."""
    return max(0, min(9, 10 - importance))


class Importance(enum.IntEnum):
    high = 10
    send = 8
    delete = 5
    low = 2


@dataclass(frozen=True)
class TaskRoute:
    name: str
    queue: Queue
    importance: Importance
    max_retries: int

    @property
    def priority(self) -> int:
        return redis_priority(self.importance)


ROUTES: dict[str, TaskRoute] = {
    r.name: r
    for r in (
        TaskRoute(TaskName.process_event, Queue.short, Importance.high, 5),
        # Every sync is bulk: how much it brings is unknown until it runs; its parts are
        # bounded (POSTROOM_BULK_PART_S), so an incremental one waits a part at most.
        TaskRoute(TaskName.sync_account, Queue.bulk, Importance.high, 5),
        TaskRoute(TaskName.send, Queue.short, Importance.send, 3),
        # A delete of more than BULK_DELETE_MIN messages goes to bulk (route_queue), in parts.
        TaskRoute(TaskName.delete, Queue.short, Importance.delete, 5),
        TaskRoute(TaskName.classify, Queue.short, Importance.low, 3),
        TaskRoute(TaskName.apply_rules, Queue.short, Importance.low, 3),
        # After a sync: decoding images is CPU work of unknown size, never ahead of short work.
        TaskRoute(TaskName.generate_thumbnail, Queue.bulk, Importance.low, 3),
        # 1-15 s of numpy per fit: bulk, so no webhook or send waits for a slot behind it.
        TaskRoute(TaskName.refit_tenant, Queue.bulk, Importance.low, 0),
        TaskRoute(TaskName.periodic_sync, Queue.periodic, Importance.high, 0),
        TaskRoute(TaskName.sweep_outbox, Queue.periodic, Importance.high, 0),
        TaskRoute(TaskName.cleanup, Queue.periodic, Importance.high, 0),
        TaskRoute(TaskName.reconcile, Queue.bulk, Importance.high, 0),
    )
}


def route_for(task_name: str) -> TaskRoute:
    try:
        return ROUTES[task_name]
    except KeyError:
        raise KeyError(f"No route for task {task_name!r}: add it to worker.config.ROUTES") from None


# A delete naming more messages than this is a mass delete: bulk class.
BULK_DELETE_MIN = 100


def route_queue(task_name: str, kwargs: dict[str, Any]) -> Queue:
    """The class of one task: its route's, except that a mass delete is bulk."""
    route = route_for(task_name)
    if task_name == TaskName.delete and len(kwargs.get("message_ids") or ()) > BULK_DELETE_MIN:
        return Queue.bulk
    return route.queue


# -- the Celery application's settings ------------------------------------------------------
# Here, not in worker.app, so the API can build its publisher-only app without importing
# worker.app (which loads the task modules' signal receivers and builds the worker's app).

TASK_MODULES = [
    "worker.tasks.events",
    "worker.tasks.maintenance",
    "worker.tasks.send",
    "worker.tasks.classify",
    "worker.tasks.mail",
    "worker.tasks.thumbnails",
]


def make_celery(settings: Settings, *, publisher_only: bool = False) -> Celery:
    """The app; `publisher_only` (the API) has no result backend: it reads outcomes from the
    event row, and a Redis result backend would subscribe on every publish and retry for
    seconds when Redis is down, holding the webhook answer."""
    app = Celery("postroom", include=[] if publisher_only else TASK_MODULES)
    longest_countdown = settings.retry_cap_s
    visibility_timeout = int(longest_countdown + settings.task_time_limit_s) * 2 + 600
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=None if publisher_only else settings.redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        # One direct exchange per queue, named like it: Celery's producer and the API's
        # AsyncPublisher then address the same exchange, and kombu can restore a message
        # (worker lost, visibility timeout) through the binding of that exchange.
        # Every lane of every class is a queue of its own (worker.config.LANES).
        task_queues=[KQueue(q, Exchange(q, type="direct"), routing_key=q) for q in all_queues()],
        task_default_queue=lane_names(Queue.short)[0],
        # Beat's ticks and any send that bypasses worker.dispatch; dispatch picks the lane.
        task_routes={name: {"queue": lane_names(r.queue)[0]} for name, r in ROUTES.items()},
        task_default_priority=5,
        # Reliability: a task is acknowledged only once it finished; a killed worker's task goes
        # back to the queue; one message reserved per process so a crash loses at most that one.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        result_expires=settings.result_expires_s,
        result_extended=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        # On a lost broker connection, acks_late tasks in flight will be redelivered: cancel
        # them rather than finish them a second time. (A worker that stopped consuming after
        # a Redis reconnect, Celery issue 8030, was fixed in kombu 5.4; fault test 3 checks.)
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_transport_options={
            # Must outlast the longest countdown plus the hard time limit, or Redis re-delivers
            # a retry that is only waiting for its ETA (Celery issues 2599, 5935).
            "visibility_timeout": visibility_timeout,
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            # Round robin: the queue just served goes to the end of the BRPOP list, so lanes
            # (tenants) of one priority step take turns (docs/architecture.md "Lanes").
            "queue_order_strategy": "round_robin",
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry_on_timeout": True,
            "health_check_interval": 15,
        },
        # Set in all three places, or Celery falls back to one hour (Celery issue 7651).
        result_backend_transport_options={
            "retry_policy": {"timeout": 5.0},
            "visibility_timeout": visibility_timeout,
        },
        visibility_timeout=visibility_timeout,
        redis_socket_timeout=5,
        redis_socket_connect_timeout=2,
        beat_schedule={
            "sweep-outbox": {
                "task": TaskName.sweep_outbox.value,
                "schedule": settings.outbox_sweep_interval_s,
                "options": {"expires": settings.outbox_sweep_interval_s * 2},
            },
            "cleanup": {
                "task": TaskName.cleanup.value,
                "schedule": 3600.0,
                "options": {"expires": 1800},
            },
            "periodic-sync": {
                "task": TaskName.periodic_sync.value,
                "schedule": 300.0,
                "options": {"expires": 240},
            },
            "reconcile": {
                "task": TaskName.reconcile.value,
                "schedule": 900.0,
                "options": {"expires": 600},
            },
        },
    )
    # Beat's ticks at their route's priority. Without it a tick took the tasks' default
    # (task_default_priority, 5), which the Redis transport serves only after every more urgent
    # message of the queues the same worker consumes (the periodic worker has a slot of its
    # own too: docs/operations.md "Worker layout").
    for entry in app.conf.beat_schedule.values():
        entry["options"]["priority"] = ROUTES[entry["task"]].priority
    if publisher_only:
        # A publish that cannot reach Redis at once gives up: the event is committed and the
        # outbox sweeper publishes it later. Without this kombu reconnects for seconds.
        app.conf.broker_transport_options.update(
            {
                "max_retries": 1,
                "interval_start": 0,
                "interval_step": 0.1,
                "interval_max": 0.2,
                "socket_connect_timeout": settings.publish_timeout_s,
                "socket_timeout": settings.publish_timeout_s,
            }
        )
        app.conf.broker_connection_timeout = settings.publish_timeout_s
    return app


if __name__ == "__main__":  # `python -m worker.config short periodic`: the -Q list of a worker
    import sys

    print(",".join(name for c in sys.argv[1:] for name in lane_names(Queue(c))))
