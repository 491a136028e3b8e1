"""The GCRA budget against a real Redis: burst, exact waits, recovery, expiry, fail-open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.ratelimit import KEY_PREFIX, Budget, RateLimiter
from tests.peers import free_port


@pytest.fixture
async def redis(redis_server: Any) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def name() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_burst_then_the_wait_is_one_emission_interval(redis: Any) -> None:
    limiter, budget, key = RateLimiter(redis), Budget(rate_per_s=10, burst=4), name()
    assert [await limiter.spend(key, budget) for _ in range(4)] == [None] * 4
    wait = await limiter.spend(key, budget)
    assert wait is not None and 0.05 < wait <= 0.1
    # A refused request spends nothing: asking again does not push the wait further out.
    again = await limiter.spend(key, budget)
    assert again is not None and again <= wait


async def test_after_the_wait_exactly_the_rate_gets_through(redis: Any) -> None:
    limiter, budget, key = RateLimiter(redis), Budget(rate_per_s=5, burst=2), name()
    for _ in range(2):
        await limiter.spend(key, budget)
    wait = await limiter.spend(key, budget)
    assert wait is not None
    await asyncio.sleep(wait + 0.01)
    assert await limiter.spend(key, budget) is None
    assert await limiter.spend(key, budget) is not None


async def test_the_key_expires_once_the_budget_is_full_again(redis: Any) -> None:
    limiter, key = RateLimiter(redis), name()
    await limiter.spend(key, Budget(rate_per_s=100, burst=5))
    ttl_ms = await redis.pttl(KEY_PREFIX + key)
    assert 0 < ttl_ms <= 10  # one emission interval: nothing is kept for an idle key


async def test_per_minute_budget(redis: Any) -> None:
    limiter, budget, key = RateLimiter(redis), Budget.per_minute(3), name()
    assert [await limiter.spend(key, budget) for _ in range(3)] == [None] * 3
    wait = await limiter.spend(key, budget)
    assert wait is not None and 19 < wait <= 20


async def test_a_zero_rate_is_unlimited_without_asking_redis() -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RateLimiter(dead)
    assert await limiter.spend(name(), Budget(rate_per_s=0, burst=1)) is None
    await dead.aclose()


async def test_redis_down_fails_open_and_then_stops_asking_for_a_while() -> None:
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    limiter = RateLimiter(dead)
    budget = Budget(rate_per_s=0.001, burst=1)
    assert [await limiter.spend("k", budget) for _ in range(5)] == [None] * 5
    assert limiter._skip_until > 0
    await dead.aclose()
