"""Nylas request budgets per application and per grant, shared by every process through Redis.

Two things decide whether a call to Nylas may go out now:
- a rate budget (GCRA, as services/ratelimit.py) for the application and one per grant:
  `POSTROOM_NYLAS_APP_RATE_PER_S` / `POSTROOM_NYLAS_GRANT_RATE_PER_S` with their bursts;
- a hold: after Nylas answered 429 with `Retry-After`, nothing goes out for that grant (or,
  for an application-wide call, for the whole application) until that time has passed, from
  any worker. Retrying into a 429 only prolongs it.

Both checks and the spending are one Lua script on Redis's clock: a call spends from both
budgets or from neither. A call that would wait longer than `POSTROOM_NYLAS_BUDGET_WAIT_S`
raises NylasHeldOff, which the worker turns into a retry at that time without spending one of
the task's attempts (worker.execution). Redis being away does not stop Nylas work: the call
goes out unbudgeted (logged), as the other budgets do.

The API's own calls (the grant check when an account is added) spend from the same budgets.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from services import metrics
from services.errors import ProviderTemporaryError
from settings import Settings

log = structlog.get_logger(__name__)

PREFIX = "postroom:nylas:"
APP = "app"

# KEYS: [1] app hold, [2] grant hold (or the app hold again), [3] app budget, [4] grant budget.
# ARGV: app interval us, app burst, grant interval us, grant burst (interval 0: no budget).
# 0 when the call may go (both budgets spent), else microseconds to wait (nothing spent).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
for i = 1, 2 do
  local until_ = tonumber(redis.call('GET', KEYS[i]) or 0)
  if until_ - now > wait then wait = until_ - now end
end
if wait > 0 then return math.ceil(wait) end
local tats = {}
for i = 1, 2 do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if interval > 0 then
    local tat = tonumber(redis.call('GET', KEYS[2 + i]) or now)
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - burst * interval
    if now < allow_at and allow_at - now > wait then wait = allow_at - now end
    tats[i] = new_tat
  end
end
if wait > 0 then return math.ceil(wait) end
for i = 1, 2 do
  if tats[i] then
    local ttl = math.ceil((tats[i] - now) / 1000)
    redis.call('SET', KEYS[2 + i], string.format('%.0f', tats[i]), 'PX', math.max(ttl, 1))
  end
end
return 0
"""

# KEYS[1]: a hold; ARGV[1]: seconds. Moves the hold's end later, never earlier.
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + math.floor(tonumber(ARGV[1]) * 1000000)
local old = tonumber(redis.call('GET', KEYS[1]) or 0)
if until_ > old then
  local ttl_ms = math.ceil((until_ - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', ttl_ms)
end
return 1
"""

_OPEN_FOR_S = 5.0
# A 429 without a usable Retry-After still holds off this long.
DEFAULT_HOLD_S = 1.0
MAX_HOLD_S = 600.0


class NylasHeldOff(ProviderTemporaryError):
    """The grant's (or application's) Nylas budget has no room within the wait allowed."""


@dataclass(frozen=True)
class Rates:
    app_per_s: float
    app_burst: int
    grant_per_s: float
    grant_burst: int
    max_wait_s: float


def _interval_us(rate: float) -> int:
    return 0 if rate <= 0 else max(1, round(1_000_000 / rate))


class NylasBudget:
    @classmethod
    def from_settings(cls, settings: Settings) -> NylasBudget:
        """The shared budgets, on a Redis client of its own (made on first use, in the
        event loop of the process that calls)."""
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        return cls(
            client,
            Rates(
                app_per_s=settings.nylas_app_rate_per_s,
                app_burst=settings.nylas_app_burst,
                grant_per_s=settings.nylas_grant_rate_per_s,
                grant_burst=settings.nylas_grant_burst,
                max_wait_s=settings.nylas_budget_wait_s,
            ),
        )

    def __init__(self, redis: Any, rates: Rates) -> None:
        self.redis = redis
        self.rates = rates
        self._take = redis.register_script(_TAKE)
        self._hold = redis.register_script(_HOLD)
        self._skip_until = 0.0

    def _keys(self, grant: str | None) -> list[str]:
        app_hold = f"{PREFIX}hold:{APP}"
        grant_hold = f"{PREFIX}hold:grant:{grant}" if grant else app_hold
        grant_rate = f"{PREFIX}rate:grant:{grant}" if grant else f"{PREFIX}rate:none"
        return [app_hold, grant_hold, f"{PREFIX}rate:{APP}", grant_rate]

    async def wait_s(self, grant: str | None) -> float:
        """Spend one call of the budgets when they have room (0.0), else the seconds to wait."""
        if time.monotonic() < self._skip_until:
            return 0.0
        r = self.rates
        args = [
            _interval_us(r.app_per_s),
            max(1, r.app_burst),
            _interval_us(r.grant_per_s) if grant else 0,
            max(1, r.grant_burst),
        ]
        try:
            wait_us = await self._take(keys=self._keys(grant), args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._unavailable(exc)
            return 0.0
        return int(wait_us) / 1_000_000

    async def acquire(self, grant: str | None) -> None:
        """Wait for room in the budgets, or raise NylasHeldOff when it is too far away."""
        deadline = time.monotonic() + self.rates.max_wait_s
        while True:
            wait = await self.wait_s(grant)
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise NylasHeldOff(
                    "Nylas's request budget for this account is spent; trying again later.",
                    retry_after=wait,
                )
            await asyncio.sleep(wait)

    async def hold(self, grant: str | None, seconds: float | None) -> None:
        """Nylas answered 429: every worker holds off `grant` (None: the application)."""
        hold_s = min(max(seconds if seconds and seconds > 0 else DEFAULT_HOLD_S, 0.0), MAX_HOLD_S)
        key = self._keys(grant)[1]
        scope = "grant" if grant else "application"
        log.warning("nylas_rate_limited", scope=scope, hold_s=hold_s)
        metrics.NYLAS_HOLDS.labels(scope=scope).inc()
        try:
            await self._hold(keys=[key], args=[hold_s])
        except (RedisError, OSError, TimeoutError) as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + _OPEN_FOR_S
        log.warning("nylas_budget_unavailable", error=type(exc).__name__, skip_s=_OPEN_FOR_S)
