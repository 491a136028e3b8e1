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
from tests.conftest import ENV
from tests.factories import create_tenant
from worker.config import LANES, Queue, all_queues, lane_names, lanes_for
from worker.dispatch import WEIGHTS_KEY, AsyncPublisher, Weights, destination

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
