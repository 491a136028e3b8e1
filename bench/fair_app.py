"""The Celery app of `make bench BENCH=fairness`: postroom's own app and broker settings (lanes,
round robin, priorities, prefetch 1, acks_late) plus one task that only records when it ran."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from worker.app import celery_app

_redis: redis.Redis | None = None
TASK_S = float(os.environ.get("BENCH_FAIR_TASK_MS", "2")) / 1000


@celery_app.task(name="bench.fairness.touch", acks_late=True)
def touch(tenant: str, mark: str | None = None) -> None:
    """A task of fixed length; B's (with a mark) notes when it ran."""
    global _redis
    time.sleep(TASK_S)
    if mark:
        if _redis is None:
            _redis = redis.Redis.from_url(str(celery_app.conf.broker_url))
        _redis.set(f"bench:fair:{mark}", repr(time.time()), ex=600)


app: Any = celery_app
