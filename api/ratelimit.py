"""The /v1 budgets as the API applies them: per API key (every request) and per tenant (sends).

Each check is one Redis round trip (services/ratelimit.py); webhooks never reach either.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from typing import Any

from fastapi import Request

from services.errors import RateLimited
from services.ratelimit import Budget, RateLimiter
from settings import Settings


def _limiter(request: Request | Any) -> RateLimiter:
    # Made on first use around the lifespan's one Redis client (it holds no connection itself).
    # A Request, or the app itself (the body middleware authenticates before a route runs).
    state = getattr(request, "app", request).state
    limiter = getattr(state, "limiter", None)
    if limiter is None:
        limiter = state.limiter = RateLimiter(state.redis)
    return limiter  # type: ignore[no-any-return]


def _settings(request: Request | Any) -> Settings:
    return getattr(request, "app", request).state.settings  # type: ignore[no-any-return]


def _wait_words(wait_s: float) -> str:
    return f"retry in {max(1, math.ceil(wait_s))} s"  # the same whole seconds as Retry-After


async def spend_key_budget(request: Request | Any, key_hash: str) -> None:
    """One request of the key's budget (keyed by the key's hash: known before any query)."""
    s = _settings(request)
    budget = Budget(rate_per_s=s.rate_limit_per_s, burst=s.rate_limit_burst)
    wait = await _limiter(request).spend(f"key:{key_hash[:32]}", budget)
    if wait is not None:
        raise RateLimited(
            f"This API key is over its request budget ({s.rate_limit_per_s:g} requests per "
            f"second, bursts of {s.rate_limit_burst}); {_wait_words(wait)}.",
            retry_after=wait,
        )


async def spend_send_budget(request: Request, tenant_id: uuid.UUID) -> None:
    """One send of the tenant's budget, shared by all of the tenant's keys."""
    s = _settings(request)
    wait = await _limiter(request).spend(f"send:{tenant_id}", Budget.per_minute(s.sends_per_minute))
    if wait is not None:
        raise RateLimited(
            f"This tenant is over its send budget ({s.sends_per_minute} sends per minute); "
            f"{_wait_words(wait)}.",
            retry_after=wait,
        )


def _per_hour(burst: int, per_hour: int) -> Budget:
    return Budget(rate_per_s=per_hour / 3600.0, burst=burst)


async def spend_verify_budget(request: Request, tenant_id: uuid.UUID, hosts: list[str]) -> None:
    """One verification of the tenant's budget and of each target host's (per tenant): a
    check logs in to a server the tenant names, so unbudgeted it guesses passwords and scans
    ports for whoever holds a key. Spent before any connection."""
    s = _settings(request)
    limiter = _limiter(request)
    if s.verify_per_hour > 0:
        wait = await limiter.spend(
            f"verify:{tenant_id}", _per_hour(s.verify_burst, s.verify_per_hour)
        )
        if wait is not None:
            raise RateLimited(
                f"This tenant is over its account verification budget ({s.verify_burst} at "
                f"once, then {s.verify_per_hour} per hour); {_wait_words(wait)}.",
                retry_after=wait,
            )
    if s.verify_host_per_hour <= 0:
        return
    for host in hosts:
        digest = hashlib.sha256(host.encode()).hexdigest()[:32]
        wait = await limiter.spend(
            f"verify:{tenant_id}:{digest}",
            _per_hour(s.verify_host_burst, s.verify_host_per_hour),
        )
        if wait is not None:
            raise RateLimited(
                f"This tenant is over its verification budget for one of these hosts "
                f"({s.verify_host_burst} at once, then {s.verify_host_per_hour} per hour); "
                f"{_wait_words(wait)}.",
                retry_after=wait,
            )


async def spend_unknown_key_budget(app: Request | Any, client: str) -> float | None:
    """One failed authentication of the client address's budget (a missing, malformed, unknown
    or revoked key): None while it fits, else the seconds until the next one would."""
    s = _settings(app)
    budget = Budget(rate_per_s=s.unknown_key_per_s, burst=s.unknown_key_burst)
    return await _limiter(app).spend(f"unknown-key:{client}", budget)
