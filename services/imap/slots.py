"""At most N IMAP connections per mail account at once, counted for every worker in Redis.

A slot is a member of the account's sorted set, scored by the time its lease runs out (Redis's
own clock, so hosts need not agree on the time). Acquiring drops expired members and adds ours
only while fewer than N remain; the holder renews its lease while it works, so a worker that
dies frees its slot within SLOT_TTL_S. Many servers allow few connections per user (Dovecot's
`mail_max_userip_connections` is 10, some hosts 2 or 3; Gmail 15): a sync, a delete and a rule
move of one account no longer open connections past that.

Redis being away does not stop mail work: the connection is opened without a slot (logged),
as the other budgets do.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog

from services.errors import ProviderTemporaryError
from settings import Settings

log = structlog.get_logger(__name__)

SLOT_TTL_S = 60.0
KEY = "postroom:imap-slots:{account_id}"

# KEYS[1] the account's set; ARGV: ttl seconds, limit, token. 1 when the token holds a slot.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, ttl, limit, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, token) or redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + ttl, token)
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
  return 1
end
return 0
"""


class AccountBusy(ProviderTemporaryError):
    """Every connection slot of the account stayed taken for the whole wait."""


_clients: dict[tuple[str, int], aioredis.Redis] = {}


def _client(url: str) -> aioredis.Redis:
    """One client per process and event loop (a worker process has one loop)."""
    key = (url, id(asyncio.get_running_loop()))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = aioredis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )
    return client


async def _try(client: aioredis.Redis, key: str, limit: int, token: str) -> bool:
    return bool(await client.eval(_ACQUIRE, 1, key, SLOT_TTL_S, limit, token))  # type: ignore[misc]


@contextlib.asynccontextmanager
async def imap_slot(settings: Settings, account_id: uuid.UUID) -> AsyncIterator[None]:
    """Hold one of the account's `POSTROOM_IMAP_MAX_CONNECTIONS` slots around a connection.

    One try, no waiting: when every slot is taken, AccountBusy at once. The task then gives its
    worker back and is re-queued with a countdown (worker.execution, not counted as an
    attempt). Waiting inside the task held a bulk worker for up to 20 s per try, and a server
    that keeps an account's slots busy (a NOTIFY flood) could so hold every bulk worker.
    """
    limit = max(1, settings.imap_max_connections)
    key = KEY.format(account_id=account_id)
    token = uuid.uuid4().hex
    try:
        client = _client(settings.redis_url)
        held = await _take(client, key, limit, token)
    except AccountBusy:
        raise
    except Exception as exc:  # Redis away: work on without the budget rather than stop mail
        log.warning("imap_slot_unavailable", error=type(exc).__name__)
        yield
        return
    renewer = asyncio.create_task(_renew(client, key, limit, token)) if held else None
    try:
        yield
    finally:
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        with contextlib.suppress(Exception):
            await client.zrem(key, token)


async def _take(client: aioredis.Redis, key: str, limit: int, token: str) -> bool:
    if not await _try(client, key, limit, token):
        raise AccountBusy(
            f"All {limit} IMAP connections allowed for this account are in use; "
            "the task will be retried."
        )
    return True


async def _renew(client: aioredis.Redis, key: str, limit: int, token: str) -> None:
    while True:
        await asyncio.sleep(SLOT_TTL_S / 4)
        try:
            if not await _try(client, key, limit, token):
                log.warning("imap_slot_lost")  # expired while Redis was away; others took it
        except Exception as exc:
            log.warning("imap_slot_renew_failed", error=type(exc).__name__)


async def holders(settings: Settings, account_id: uuid.UUID) -> list[Any]:
    """The live slot holders of an account (operations and tests)."""
    client = _client(settings.redis_url)
    key = KEY.format(account_id=account_id)
    now = (await client.time())[0]
    return list(await client.zrangebyscore(key, now, "+inf"))
