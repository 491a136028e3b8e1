"""Nylas budgets per application and grant, shared through Redis (issue 12 item 3).

Real Redis and the fake Nylas server; each gateway stands for a different worker process
(its own SDK client, its own Redis connection), so what one learns from a 429 must reach the
other through Redis."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.errors import ProviderTemporaryError
from services.nylas.budget import NylasBudget, NylasHeldOff, Rates
from services.nylas.gateway import NylasGateway
from tests.fakes.nylas_server import make_message
from tests.helpers import NYLAS_API_KEY


@pytest.fixture
def redis_client(scratch_redis: Any) -> Any:
    return scratch_redis


def gateway(fake_nylas: Any, redis_client: Any, **rates: Any) -> NylasGateway:
    values = dict(app_per_s=0, app_burst=1, grant_per_s=0, grant_burst=1, max_wait_s=5.0)
    values.update(rates)
    return NylasGateway(
        api_key=NYLAS_API_KEY,
        api_uri=fake_nylas.url,
        timeout=5,
        budget=NylasBudget(redis_client, Rates(**values)),
    )


def grant_with_message(fake_nylas: Any) -> tuple[str, str]:
    grant = f"g-{uuid.uuid4().hex[:8]}"
    fake_nylas.put_message(grant, make_message(grant, "m-1"))
    return grant, "m-1"


async def test_a_429_holds_off_the_grant_for_every_worker_until_retry_after(
    fake_nylas, redis_server, scratch_redis
) -> None:
    # Two connections to the test's own (emptied) Redis database: two workers' views.
    clients = [aioredis.Redis.from_url(redis_server.url_of(1)) for _ in range(2)]
    try:
        one, two = (gateway(fake_nylas, c) for c in clients)
        hot, hot_msg = grant_with_message(fake_nylas)
        calm, calm_msg = grant_with_message(fake_nylas)
        fake_nylas.fail(f"/grants/{hot}/messages/", status=429, retry_after=2)

        with pytest.raises(ProviderTemporaryError):
            await one.find_message(hot, hot_msg)
        [refused] = fake_nylas.requests_to(f"/grants/{hot}/")

        # Another grant is not held: it goes out at once.
        started = time.monotonic()
        await two.find_message(calm, calm_msg)
        assert time.monotonic() - started < 1.0

        # The other worker waits until Retry-After has passed before it asks Nylas again.
        await two.find_message(hot, hot_msg)
        retried = fake_nylas.requests_to(f"/grants/{hot}/")[1]
        assert retried.at - refused.at >= 1.9, retried.at - refused.at
    finally:
        for c in clients:
            await c.aclose()


async def test_a_hold_longer_than_the_wait_raises_held_off_without_calling_nylas(
    fake_nylas, redis_client
) -> None:
    gw = gateway(fake_nylas, redis_client, max_wait_s=0.3)
    grant, msg = grant_with_message(fake_nylas)
    fake_nylas.fail(f"/grants/{grant}/messages/", status=429, retry_after=30)
    with pytest.raises(ProviderTemporaryError):
        await gw.find_message(grant, msg)
    with pytest.raises(NylasHeldOff) as held:
        await gw.find_message(grant, msg)
    assert held.value.retry_after is not None and 29 <= held.value.retry_after <= 30
    assert len(fake_nylas.requests_to(f"/grants/{grant}/")) == 1


async def test_an_application_wide_429_holds_off_every_grant(fake_nylas, redis_client) -> None:
    gw = gateway(fake_nylas, redis_client, max_wait_s=0.3)
    grant, msg = grant_with_message(fake_nylas)
    fake_nylas.fail(r"/v3/grants/[^/]+$", status=429, retry_after=20)
    with pytest.raises(ProviderTemporaryError):
        await gw.find_grant(grant)
    with pytest.raises(NylasHeldOff):
        await gw.find_message(grant, msg)
    assert fake_nylas.requests_to(f"/grants/{grant}/messages") == []


async def test_the_grant_rate_is_shared_between_workers(
    fake_nylas, redis_server, scratch_redis
) -> None:
    clients = [aioredis.Redis.from_url(redis_server.url_of(1)) for _ in range(2)]
    try:
        gws = [gateway(fake_nylas, c, grant_per_s=10, grant_burst=2) for c in clients]
        grant, msg = grant_with_message(fake_nylas)
        other, other_msg = grant_with_message(fake_nylas)
        for i in range(8):  # alternate workers: one budget between them
            await gws[i % 2].find_message(grant, msg)
        calls = fake_nylas.requests_to(f"/grants/{grant}/")
        # 2 at once, then one per 0.1 s: the 8th no earlier than 0.6 s after the first.
        assert calls[-1].at - calls[0].at >= 0.55, calls[-1].at - calls[0].at
        # Another grant has its own budget.
        started = time.monotonic()
        await gws[0].find_message(other, other_msg)
        await gws[1].find_message(other, other_msg)
        assert time.monotonic() - started < 0.5
    finally:
        for c in clients:
            await c.aclose()


async def test_the_application_rate_covers_all_grants(fake_nylas, redis_client) -> None:
    gw = gateway(fake_nylas, redis_client, app_per_s=10, app_burst=1)
    grants = [grant_with_message(fake_nylas) for _ in range(5)]
    started = time.monotonic()
    for grant, msg in grants:
        await gw.find_message(grant, msg)
    assert time.monotonic() - started >= 0.35


async def test_redis_away_lets_calls_through(fake_nylas) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    gw = gateway(fake_nylas, dead, grant_per_s=1, grant_burst=1)
    grant, msg = grant_with_message(fake_nylas)
    await gw.find_message(grant, msg)
    await gw.find_message(grant, msg)
    assert len(fake_nylas.requests_to(f"/grants/{grant}/")) == 2
    await dead.aclose()
