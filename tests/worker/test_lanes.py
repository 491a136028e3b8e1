"""Latency classes and tenant lanes: where each task message goes, and tenant weights."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis
import sqlalchemy as sa

from database.models import Tenant
from tests.factories import create_tenant
from tests.helpers import ENV
from worker.config import (
    LANES,
    PRIORITY_STEPS,
    Queue,
    all_queues,
    lane_choices,
    lane_names,
    lanes_for,
    route_for,
)
from worker.dispatch import WEIGHTS_KEY, AsyncPublisher, Weights, destination, queue_key

ROOT = Path(__file__).resolve().parents[2]


def test_every_task_has_its_class() -> None:
    tenant = {"tenant_id": str(uuid.uuid4())}
    weights = Weights()

    def cls(task: str, **kwargs: Any) -> Queue:
        return destination(task, {**tenant, **kwargs}, task_id="t", weights=weights, key=None)[0]

    assert cls("postroom.events.process") == Queue.short
    for task in ("postroom.mail.send", "postroom.mail.classify", "postroom.mail.apply_rules"):
        assert cls(task) == Queue.short
    assert cls("postroom.mail.delete", message_ids=["x"] * 100) == Queue.short
    assert cls("postroom.mail.delete", message_ids=["x"] * 101) == Queue.bulk
    assert cls("postroom.mail.sync_account") == Queue.bulk
    assert cls("postroom.maintenance.reconcile") == Queue.bulk
    assert cls("postroom.maintenance.sweep_outbox") == Queue.periodic
    assert len(all_queues()) == 2 * LANES + 1


def test_a_tenant_keeps_its_lane_and_a_weight_spreads_it() -> None:
    tenant = str(uuid.uuid4())
    weights = Weights()

    def lanes_used(weight: int) -> set[str]:
        weights.values = {tenant: weight}
        return {
            destination(
                "postroom.mail.classify",
                {"tenant_id": tenant},
                task_id=uuid.uuid4().hex,
                weights=weights,
                key=None,
            )[1]
            for _ in range(400)
        }

    one = lanes_used(1)
    assert len(one) == 1 and one <= set(lane_names(Queue.short))
    assert len(lanes_used(2)) == 2 and one <= lanes_used(2)  # weight 2 adds a lane
    assert len(lanes_used(LANES)) == LANES
    assert lanes_for("tenant:x", 3) == lanes_for("tenant:x", 3)  # every process agrees
    # Tenants spread over the lanes: 800 tenants leave no lane empty or crowded.
    counts = [0] * LANES
    for _ in range(800):
        counts[lanes_for(f"tenant:{uuid.uuid4()}")[0]] += 1
    assert min(counts) > 60 and max(counts) < 150, counts


def test_a_webhook_without_a_tenant_takes_its_grants_lane(settings: Any) -> None:
    from worker.app import make_celery

    publisher = AsyncPublisher(
        make_celery(settings, publisher_only=True), settings.redis_url, timeout=1
    )
    keys = set()
    for _ in range(50):
        key, payload = publisher.message(
            task_name="postroom.events.process",
            task_id=uuid.uuid4().hex,
            kwargs={"event_id": str(uuid.uuid4())},
            request_id=None,
            lane="grant-1",
        )
        envelope = orjson.loads(payload)
        assert envelope["properties"]["delivery_info"]["routing_key"] == key.split(":")[0]
        keys.add(key)
    assert len(keys) == 1 and next(iter(keys)).startswith("short.")


async def test_set_weight_reaches_the_database_and_the_publishers(db: Any, settings: Any) -> None:
    from worker.app import make_celery

    tenant = await create_tenant(db)
    made = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "postroom"), "admin", "set-weight", tenant.name, "3"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    async with db.transaction() as s:
        weight = (
            await s.execute(sa.select(Tenant.weight).where(Tenant.id == tenant.id))
        ).scalar_one()
    assert weight == 3
    r = redis.Redis.from_url(settings.redis_url)
    assert r.hget(WEIGHTS_KEY, str(tenant.id)) == b"3"

    publisher = AsyncPublisher(
        make_celery(settings, publisher_only=True), settings.redis_url, timeout=1
    )
    await publisher.refresh_weights()
    assert publisher.weights.of(tenant.id) == 3
    await publisher.close()

    bad = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "postroom"), "admin", "set-weight", tenant.name, "0"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "1 to" in bad.stderr


def _two_tenants_sharing_a_lane() -> tuple[str, str, list[str]]:
    """(heavy, light, light's lanes): the light tenant's home lane is the heavy one's."""
    heavy = str(uuid.uuid4())
    heavy_home = lane_choices(Queue.short, f"tenant:{heavy}")[0]
    while True:
        light = str(uuid.uuid4())
        lanes = lane_choices(Queue.short, f"tenant:{light}")
        heavy_lanes = lane_choices(Queue.short, f"tenant:{heavy}")
        if lanes[0] == heavy_home and lanes[1] not in heavy_lanes:
            return heavy, light, lanes


async def test_a_light_tenant_avoids_the_lane_a_heavy_one_fills(settings: Any) -> None:
    from worker.app import make_celery

    heavy, light, light_lanes = _two_tenants_sharing_a_lane()
    assert len(light_lanes) == 2 and len(set(light_lanes)) == 2
    # The session's Redis, in a database of its own: the session's workers (if a test started
    # them) consume database 0 and must not take these messages while the test counts them.
    url = settings.redis_url.rsplit("/", 1)[0] + "/7"
    r = redis.Redis.from_url(url)
    keys = [queue_key(q, p) for q in lane_names(Queue.short) for p in PRIORITY_STEPS]
    r.delete(*keys)
    publisher = AsyncPublisher(make_celery(settings, publisher_only=True), url, timeout=5)
    publisher.weights.loaded_at = float("inf")  # weight 1 for both, no weights hash needed
    priority = route_for("postroom.mail.classify").priority

    def depth(queue: str) -> int:
        return int(r.llen(queue_key(queue, priority)))

    try:
        # The heavy tenant's 1,000 tasks, all into its home lane (the light tenant's first).
        pipe = r.pipeline(transaction=False)
        for _ in range(1000):
            _, payload = publisher.message(
                task_name="postroom.mail.classify",
                task_id=uuid.uuid4().hex,
                kwargs={"tenant_id": heavy},
                request_id=None,
            )
            pipe.lpush(queue_key(light_lanes[0], priority), payload)
        pipe.execute()
        assert depth(light_lanes[0]) == 1000 and depth(light_lanes[1]) == 0

        task_id = uuid.uuid4().hex
        assert await publisher.publish(
            task_name="postroom.mail.classify",
            event_id=uuid.uuid4(),
            task_id=task_id,
            kwargs={"tenant_id": light},
        )
        assert depth(light_lanes[0]) == 1000 and depth(light_lanes[1]) == 1
        # The message names the lane it is in: kombu puts an unacked one back there.
        envelope = orjson.loads(r.lindex(queue_key(light_lanes[1], priority), 0) or b"")
        assert envelope["headers"]["id"] == task_id
        info = envelope["properties"]["delivery_info"]
        assert info == {"exchange": light_lanes[1], "routing_key": light_lanes[1]}

        # The heavy tenant's next tasks fill its own other lane, not the light tenant's.
        for _ in range(20):
            assert await publisher.publish(
                task_name="postroom.mail.classify",
                event_id=uuid.uuid4(),
                task_id=uuid.uuid4().hex,
                kwargs={"tenant_id": heavy},
            )
        heavy_other = lane_choices(Queue.short, f"tenant:{heavy}")[1]
        assert depth(heavy_other) == 20 and depth(light_lanes[1]) == 1

        # Equal depths: the home lane, as before two choices.
        r.delete(*keys)
        assert await publisher.publish(
            task_name="postroom.mail.classify",
            event_id=uuid.uuid4(),
            task_id=uuid.uuid4().hex,
            kwargs={"tenant_id": light},
        )
        assert depth(light_lanes[0]) == 1 and depth(light_lanes[1]) == 0
    finally:
        r.delete(*keys)
        await publisher.close()


async def test_messages_published_together_share_a_script_call_and_count_each_other(
    settings: Any,
) -> None:
    """Publishes made meanwhile go in one round trip, each still to the shorter of its lanes.

    A private Redis: its command counts are this test's alone, and no worker takes a message.
    """
    import asyncio

    from tests.peers import RedisServer
    from worker.app import make_celery

    server = RedisServer().start()
    r = redis.Redis.from_url(server.url)
    publisher = AsyncPublisher(make_celery(settings, publisher_only=True), server.url, timeout=5)
    publisher.weights.loaded_at = float("inf")  # weight 1, no weights hash needed
    tenant = str(uuid.uuid4())
    lanes = lane_choices(Queue.short, f"tenant:{tenant}")
    priority = route_for("postroom.mail.classify").priority
    try:
        task_ids = [uuid.uuid4().hex for _ in range(40)]
        sent = await asyncio.gather(
            *(
                publisher.publish(
                    task_name="postroom.mail.classify",
                    event_id=uuid.uuid4(),
                    task_id=task_id,
                    kwargs={"tenant_id": tenant},
                )
                for task_id in task_ids
            )
        )
        assert sent == [True] * 40
        calls = r.info("commandstats")
        script_calls = sum(
            v["calls"] for k, v in calls.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
        )
        assert 1 <= script_calls < 40, calls
        # Each message saw the ones pushed before it in the same call: the two lanes alternate,
        # home first on every tie, as forty separate publishes would have left them.
        found: dict[str, str] = {}
        for lane in lanes:
            for raw in r.lrange(queue_key(lane, priority), 0, -1):
                envelope = orjson.loads(raw)
                info = envelope["properties"]["delivery_info"]
                assert info == {"exchange": lane, "routing_key": lane}
                found[envelope["headers"]["id"]] = lane
        assert sorted(found) == sorted(task_ids)
        assert [r.llen(queue_key(q, priority)) for q in lanes] == [20, 20]
    finally:
        await publisher.close()
        r.close()
        server.stop()


async def test_publishes_made_together_each_fail_alone_when_redis_is_away(settings: Any) -> None:
    import asyncio
    import time

    from tests.peers import free_port
    from worker.app import make_celery

    url = f"redis://127.0.0.1:{free_port()}/0"
    publisher = AsyncPublisher(make_celery(settings, publisher_only=True), url, timeout=0.5)
    publisher.weights.loaded_at = float("inf")
    started = time.monotonic()
    try:
        sent = await asyncio.gather(
            *(
                publisher.publish(
                    task_name="postroom.events.process",
                    event_id=uuid.uuid4(),
                    task_id=uuid.uuid4().hex,
                    lane="grant-1",
                )
                for _ in range(20)
            )
        )
    finally:
        await publisher.close()
    assert sent == [False] * 20  # each left to the outbox sweeper, none raised
    assert time.monotonic() - started < 2.5
