"""/health/* and /metrics through the ASGI app, against the real database, Redis and worker."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from database.models import DeadLetter
from tests.helpers import notification, post_webhook
from tests.peers import free_port
from worker.config import Queue, all_queues, lane_names


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when it is not there yet."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    r = await client.get("/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]


async def test_ready_is_503_quickly_when_the_broker_is_gone(settings: Any) -> None:
    from api.app import create_app

    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(dead)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            start = time.monotonic()
            r = await c.get("/health/ready")
            took = time.monotonic() - start
            detailed = await c.get("/health/detailed")
    assert r.status_code == 503
    assert r.json()["checks"]["broker"]["ok"] is False
    assert r.json()["checks"]["database"]["ok"] is True
    assert took < 2.0
    assert detailed.status_code == 503
    assert detailed.json()["queues"] is None


async def test_detailed_lists_workers_queues_and_dead_letters(
    empty_database: None, client, worker, db
) -> None:
    # The dead-letter counts are over every tenant: this letter must be the only one.
    async with db.transaction() as s:
        s.add(
            DeadLetter(
                task_name="postroom.mail.send",
                exception_type="SMTPDataError",
                exception_message="550 rejected",
            )
        )
    start = time.monotonic()
    r = await client.get("/health/detailed")
    assert time.monotonic() - start < 3.0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert any(name.startswith("test-") for name in body["checks"]["workers"]["workers"])
    assert set(body["queues"]) == set(all_queues())
    assert body["dead_letters"] == {"pending": 1, "replayed": 0}


async def test_webhook_counters_latency_and_jobs_by_endpoint(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    payload = notification("message.updated", {"id": "m-metrics", "grant_id": "g-none"})
    assert (await post_webhook(client, payload)).json()["status"] == "queued"
    assert (await post_webhook(client, payload)).json()["status"] == "duplicate"
    assert (await post_webhook(client, payload, signature="bad")).status_code == 401
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    received = "postroom_webhooks_received_total"
    assert delta(received, type="message.updated", outcome="queued") == 1
    assert delta(received, type="message.updated", outcome="duplicate") == 1
    assert delta(received, type="unverified", outcome="invalid_signature") == 1
    assert delta("postroom_webhook_ack_seconds_count") == 3
    assert (
        delta(
            "postroom_jobs_published_total",
            endpoint="POST /webhooks/nylas",
            task="postroom.events.process",
        )
        == 1
    )


async def test_queue_depths_and_events_by_status_are_read_at_scrape_time(
    empty_database: None, unserved_client: httpx.AsyncClient
) -> None:
    # The gauges count every tenant's rows: these three events must be the only ones.
    idle_client = unserved_client
    for i in range(3):
        r = await post_webhook(idle_client, notification("message.created", {"id": f"q{i}"}))
        assert r.json()["status"] == "queued"
    text = await scrape(idle_client)
    # Webhooks are short work; without a grant they spread over the short lanes.
    assert sample(text, "postroom_class_queue_depth", **{"class": "short"}) == 3
    assert sample(text, "postroom_class_queue_depth", **{"class": "bulk"}) == 0
    lanes = lane_names(Queue.short)
    assert sum(sample(text, "postroom_queue_depth", queue=q) for q in lanes) == 3
    assert sample(text, "postroom_events", status="received") == 3
    assert sample(text, "postroom_dead_letters", state="pending") == 0
    assert sample(text, "postroom_scrape_source_up", source="redis") == 1
    assert sample(text, "postroom_scrape_source_up", source="database") == 1
    detailed = (await idle_client.get("/health/detailed")).json()
    assert sum(detailed["queues"][q] for q in lanes) == 3
    assert detailed["events"] == {"received": 3}
    # No worker listens on this broker: the detailed view says so within its 1 s ping.
    assert detailed["checks"]["workers"] == {
        **detailed["checks"]["workers"],
        "ok": False,
        "workers": [],
    }
