"""Queues, priorities, routes and retry counts: the one table both publishers and workers read.

Redis priorities run the other way round from AMQP: kombu's Redis transport keeps one list
per priority step and BRPOPs them in ascending order, so **0 is served first**. We speak of
importance (10 = most urgent, as ARCHITECTURE.md does) and convert once, here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Queue(enum.StrEnum):
    sync = "sync"
    send = "send"
    delete = "delete"
    classify = "classify"
    periodic = "periodic"


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
        TaskRoute("postroom.events.process", Queue.sync, Importance.high, 5),
        TaskRoute("postroom.mail.sync_account", Queue.sync, Importance.high, 5),
        TaskRoute("postroom.mail.send", Queue.send, Importance.send, 3),
        TaskRoute("postroom.mail.delete", Queue.delete, Importance.delete, 5),
        TaskRoute("postroom.mail.classify", Queue.classify, Importance.low, 3),
        TaskRoute("postroom.mail.apply_rules", Queue.classify, Importance.low, 3),
        TaskRoute("postroom.maintenance.periodic_sync", Queue.periodic, Importance.high, 0),
        TaskRoute("postroom.maintenance.sweep_outbox", Queue.periodic, Importance.high, 0),
        TaskRoute("postroom.maintenance.cleanup", Queue.periodic, Importance.high, 0),
        TaskRoute("postroom.maintenance.reconcile", Queue.periodic, Importance.high, 0),
    )
}


def route_for(task_name: str) -> TaskRoute:
    try:
        return ROUTES[task_name]
    except KeyError:
        raise KeyError(f"No route for task {task_name!r}: add it to worker.config.ROUTES") from None
