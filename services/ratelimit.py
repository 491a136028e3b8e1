"""Request budgets kept in Redis, shared by every API process: GCRA in one Lua script.

GCRA (the generic cell rate algorithm) keeps one number per budget, the theoretical arrival
time (TAT) of the next request. A request fits when it comes no earlier than TAT minus the
burst; it then moves TAT on by one emission interval (1 / rate). Same answers as a token
bucket, but one value instead of two (tokens + last refill), and the wait until the next
request fits falls out of the arithmetic, which is what `Retry-After` needs.

One EVALSHA per check: read, decide and write happen inside Redis, atomically, on Redis's
own clock (`TIME`), so API processes with drifting clocks share one budget correctly.
If Redis does not answer, the check fails open: refusing all traffic because the limiter is
down would turn a Redis hiccup into an outage. That is logged, then the limiter stays out of
the way for a few seconds instead of making every request wait for a timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

KEY_PREFIX = "postroom:budget:"

# KEYS[1]: the budget; ARGV[1]: emission interval in microseconds; ARGV[2]: burst.
# Answers 0 when the request fits (and spends it), else the microseconds to wait.
# Numbers are written with %.0f: Lua's default number format keeps 14 digits, too few for
# microseconds since the epoch.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return math.ceil(allow_at - now)
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return 0
"""

# After Redis failed to answer, skip the check for this long (failing open without waiting).
_OPEN_FOR_S = 5.0


@dataclass(frozen=True)
class Budget:
    """`rate_per_s` requests per second on average, up to `burst` at once; rate 0 = no limit."""

    rate_per_s: float
    burst: int

    @classmethod
    def per_minute(cls, n: int) -> Budget:
        """`n` at once, then one every 60/n seconds."""
        return cls(rate_per_s=n / 60.0, burst=max(1, n))

    @property
    def unlimited(self) -> bool:
        return self.rate_per_s <= 0


class RateLimiter:
    def __init__(self, redis: Any) -> None:
        self._script = redis.register_script(_GCRA)
        self._skip_until = 0.0

    async def spend(self, name: str, budget: Budget) -> float | None:
        """Spend one request of budget `name`; None when it fits, else seconds to wait."""
        if budget.unlimited or time.monotonic() < self._skip_until:
            return None
        interval_us = max(1, round(1_000_000 / budget.rate_per_s))
        try:
            wait_us = await self._script(keys=[KEY_PREFIX + name], args=[interval_us, budget.burst])
        except (RedisError, OSError, TimeoutError) as exc:
            self._skip_until = time.monotonic() + _OPEN_FOR_S
            log.warning(
                "rate_limiter_unavailable_failing_open",
                error=type(exc).__name__,
                skip_s=_OPEN_FOR_S,
            )
            return None
        return None if int(wait_us) <= 0 else int(wait_us) / 1_000_000
