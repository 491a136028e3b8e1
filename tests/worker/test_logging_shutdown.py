"""A real uvicorn API and real Celery workers on a private Redis: JSON logs that follow a
request into its tasks, metrics summed across processes, secrets kept out, and shutdowns
that finish the work in hand and lose nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from database.models import Event, Message
from tests.api.test_health_metrics import sample
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import ENV, NYLAS_API_KEY, WEBHOOK_SECRET, notification, sign, wait_for
from tests.peers import Process, RedisServer, celery_worker, free_port, uvicorn_api, wait_port

BEARER = "Bearer pr_live_" + "9d1c" * 8


@dataclass
class Stack:
    env: dict[str, str]
    api: Process
    base: str
    redis: RedisServer

    def worker(self, name: str, concurrency: int = 2) -> Process:
        proc = celery_worker(self.env, name=name, concurrency=concurrency).start()
        proc.wait_log("ready.", timeout=60)
        return proc


@pytest.fixture
async def stack(database_name: str) -> AsyncIterator[Stack]:
    redis = RedisServer().start()
    env = {
        **ENV,
        "POSTROOM_REDIS_URL": redis.url,
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="postroom-metrics-"),
    }
    port = free_port()
    api = uvicorn_api(env, port).start()
    try:
        await asyncio.to_thread(wait_port, port, 30)
        yield Stack(env=env, api=api, base=f"http://127.0.0.1:{port}", redis=redis)
    finally:
        api.stop()
        redis.stop()


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def post(base: str, payload: dict[str, Any], **headers: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{base}/webhooks/nylas",
            content=body,
            headers={
                "content-type": "application/json",
                "x-nylas-signature": sign(body),
                **headers,
            },
        )


async def event_of(db: Any, event_id: str) -> Event:
    async with db.sessionmaker() as s:
        return (await s.execute(sa.select(Event).where(Event.id == event_id))).scalar_one()


async def test_request_id_follows_the_webhook_into_the_task_and_metrics_add_up(
    empty_database: None, stack: Stack, db: Any, fake_nylas: Any
) -> None:
    # `postroom_events` counts the rows of every tenant: this event must be the only one.
    account = await create_nylas_account(db)
    fake_nylas.put_message(account.grant_id, make_message(account.grant_id, "m-log-1"))
    worker = stack.worker("obs")
    try:
        r = await post(
            stack.base,
            notification(
                "message.created",
                {"id": "m-log-1", "grant_id": account.grant_id},
                grant_id=account.grant_id,
            ),
            **{"x-request-id": "req-obs-42", "authorization": BEARER},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "req-obs-42"
        event_id = r.json()["event_id"]

        async def done() -> bool:
            return (await event_of(db, event_id)).status == "succeeded"

        await wait_for(done, timeout=30, message="the event to be processed")
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{stack.base}/metrics")).text
    finally:
        worker.stop()

    worker_lines = json_lines(worker.log())
    # Celery's own lines are JSON too (setup_logging hook), e.g. the ready line.
    assert any("ready." in line.get("event", "") for line in worker_lines)
    ours = [x for x in worker_lines if x.get("request_id") == "req-obs-42"]
    assert ours, worker.log()[-3000:]
    # The webhook's own task logs its event; the classify chain it caused runs under child
    # events of its own, and carries the same request_id too.
    own = [x for x in ours if x.get("task") == "postroom.events.process" and "event_id" in x]
    assert own and all(x["event_id"] == event_id for x in own)
    finished = [x for x in ours if x.get("event") == "event_finished"]
    assert finished and finished[0]["tenant_id"] == str(account.tenant_id)
    assert finished[0]["task_id"] and finished[0]["task"] == "postroom.events.process"
    api_lines = [x for x in json_lines(stack.api.log()) if x.get("request_id") == "req-obs-42"]
    assert any(x.get("event") == "http_request" and x["status"] == 200 for x in api_lines)

    # Counters from the API process and the prefork worker children, one scrape.
    assert (
        sample(text, "postroom_webhooks_received_total", type="message.created", outcome="queued")
        == 1
    )
    assert (
        sample(
            text,
            "postroom_jobs_published_total",
            endpoint="POST /webhooks/nylas",
            task="postroom.events.process",
        )
        == 1
    )
    assert (
        sample(text, "postroom_task_runs_total", task="postroom.events.process", state="SUCCESS")
        == 1
    )
    assert sample(text, "postroom_task_duration_seconds_count", task="postroom.events.process") == 1
    # Publish-to-start waits of the webhook's task and its classify chain, all short work.
    assert sample(text, "postroom_task_wait_seconds_count", **{"class": "short"}) >= 1
    assert sample(text, "postroom_task_wait_seconds_count", **{"class": "bulk"}) == 0
    # The webhook's event and its classify-message run, which the process task finished in the
    # same transaction (services/classify/inline.py): no other event in this empty database.
    assert sample(text, "postroom_events", status="succeeded") == 2

    logs = stack.api.log() + worker.log()
    for secret in (
        WEBHOOK_SECRET,
        NYLAS_API_KEY,
        BEARER.split()[1],
        ENV["POSTROOM_CREDENTIAL_KEYS"],
    ):
        assert secret not in logs


async def test_sigterm_lets_the_running_task_finish_and_the_queued_one_survives(
    stack: Stack, db: Any, fake_nylas: Any
) -> None:
    account = await create_nylas_account(db)
    grant = account.grant_id
    for mid in ("slow-1", "slow-2"):
        fake_nylas.put_message(grant, make_message(grant, mid))
    # Each fetch of these messages takes 2 s: the task is mid-flight when SIGTERM arrives.
    fake_nylas.fail(r"/messages/slow-", status=0, delay=2.0, times=2)
    worker = stack.worker("warm", concurrency=1)
    ids = []
    for mid in ("slow-1", "slow-2"):
        r = await post(
            stack.base,
            notification("message.created", {"id": mid, "grant_id": grant}, grant_id=grant),
        )
        ids.append(r.json()["event_id"])

    async def processing() -> bool:
        return (await event_of(db, ids[0])).status == "processing"

    await wait_for(processing, timeout=20, message="the first task to start")
    started = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)  # the main process only, as Docker or honcho do
    await asyncio.to_thread(worker.proc.wait, 30)
    stopped_after = time.monotonic() - started
    assert "Warm shutdown" in worker.log() or "warm shutdown" in worker.log().lower()
    first = await event_of(db, ids[0])
    assert first.status == "succeeded" and first.attempts == 1
    assert (await event_of(db, ids[1])).status in ("received", "queued")
    assert stopped_after < 10

    second_worker = stack.worker("after")
    try:

        async def second_done() -> bool:
            return (await event_of(db, ids[1])).status == "succeeded"

        await wait_for(second_done, timeout=30, message="the queued task after restart")
    finally:
        second_worker.stop()
    mine = sa.select(sa.func.count()).select_from(Message).where(Message.account_id == account.id)
    async with db.sessionmaker() as s:
        stored = (await s.execute(mine)).scalar_one()
    assert stored == 2


async def test_sigterm_to_the_api_finishes_the_request_in_flight(stack: Stack) -> None:
    import redis.asyncio as aioredis

    # No worker answers on this broker, so /health/detailed waits its full 1 s ping. The
    # ping's reply queue appearing in Redis shows the request is in the API's hands.
    broker = aioredis.Redis.from_url(stack.redis.url)

    async def pinging() -> bool:
        return bool(await broker.exists("_kombu.binding.reply.celery.pidbox"))

    try:
        assert not await pinging()
        async with httpx.AsyncClient(timeout=10) as http:
            request = asyncio.create_task(http.get(f"{stack.base}/health/detailed"))
            await wait_for(pinging, timeout=10, interval=0.02, message="the worker ping")
            os.kill(stack.api.proc.pid, signal.SIGTERM)
            r = await request
    finally:
        await broker.aclose()
    assert r.status_code == 503
    assert r.json()["checks"]["database"]["ok"] is True
    await asyncio.to_thread(stack.api.proc.wait, 10)
    # uvicorn re-raises the signal once it has shut down cleanly, so the status is -SIGTERM.
    assert stack.api.proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in stack.api.log()
