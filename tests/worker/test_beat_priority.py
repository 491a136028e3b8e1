"""Beat's ticks travel at their route's priority: a backlog of urgent work on the short worker
must not hold the outbox sweeper back past its `expires` (tests/multihost found it did)."""

from __future__ import annotations

import json

import redis
from celery.beat import ScheduleEntry, Scheduler

from tests.peers import RedisServer
from worker.app import celery_app
from worker.config import route_for


def test_every_beat_tick_is_published_at_its_routes_priority() -> None:
    celery_app.loader.import_default_modules()  # beat's tasks, registered as in `make beat`
    schedule = celery_app.conf.beat_schedule
    server = RedisServer().start()  # a broker nobody consumes: the messages stay to be read
    try:
        scheduler = Scheduler(celery_app, lazy=True)
        with celery_app.connection_for_write(url=server.url) as conn:
            producer = celery_app.amqp.Producer(conn)
            for name, entry in schedule.items():
                tick = ScheduleEntry(name=name, app=celery_app, **entry)
                scheduler.apply_async(tick, producer=producer, advance=False)
        client = redis.Redis.from_url(server.url)
        priorities: dict[str, int] = {}
        for key in client.scan_iter():
            if client.type(key) == b"list":
                for raw in client.lrange(key, 0, -1):
                    message = json.loads(raw)
                    priorities[message["headers"]["task"]] = message["properties"]["priority"]
        client.close()
    finally:
        server.stop()
    assert priorities == {e["task"]: route_for(e["task"]).priority for e in schedule.values()}
    assert priorities["postroom.maintenance.sweep_outbox"] == 0  # served first, like webhooks
