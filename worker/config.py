"""Queues, priorities, routes and retry counts: the one table both publishers and workers read.

Redis priorities run the other way round from AMQP: kombu's Redis transport keeps one list
per priority step and BRPOPs them in ascending order, so **0 is served first**. We speak of
importance (10 = most urgent, as ARCHITECTURE.md does) and convert once, here.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any


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
    weight = max(1, min(weight, LANES))
    out: list[int] = []
    i = 0
    while len(out) < weight:
        digest = hashlib.sha256(f"{key}:{i}".encode()).digest()
        lane = int.from_bytes(digest[:4], "big") % LANES
        if lane not in out:
            out.append(lane)
        i += 1
    return out


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
        TaskRoute("postroom.events.process", Queue.short, Importance.high, 5),
        # Every sync is bulk: how much it brings is unknown until it runs; its parts are
        # bounded (POSTROOM_BULK_PART_S), so an incremental one waits a part at most.
        TaskRoute("postroom.mail.sync_account", Queue.bulk, Importance.high, 5),
        TaskRoute("postroom.mail.send", Queue.short, Importance.send, 3),
        # A delete of more than BULK_DELETE_MIN messages goes to bulk (route_queue), in parts.
        TaskRoute("postroom.mail.delete", Queue.short, Importance.delete, 5),
        TaskRoute("postroom.mail.classify", Queue.short, Importance.low, 3),
        TaskRoute("postroom.mail.apply_rules", Queue.short, Importance.low, 3),
        TaskRoute("postroom.maintenance.periodic_sync", Queue.periodic, Importance.high, 0),
        TaskRoute("postroom.maintenance.sweep_outbox", Queue.periodic, Importance.high, 0),
        TaskRoute("postroom.maintenance.cleanup", Queue.periodic, Importance.high, 0),
        TaskRoute("postroom.maintenance.reconcile", Queue.bulk, Importance.high, 0),
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
    if (
        task_name == "postroom.mail.delete"
        and len(kwargs.get("message_ids") or ()) > BULK_DELETE_MIN
    ):
        return Queue.bulk
    return route.queue


if __name__ == "__main__":  # `python -m worker.config short periodic`: the -Q list of a worker
    import sys

    print(",".join(name for c in sys.argv[1:] for name in lane_names(Queue(c))))
