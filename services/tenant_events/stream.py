"""`GET /v1/feed` as a live Server-Sent Events stream: the same rows in the same seq order as
the paged feed, polled from PostgreSQL, with keep-alive comments while nothing happens.

Each event goes out as `id: <seq>`, `event: <type>`, `data: <the envelope's JSON>`; a client
that reconnects sends `Last-Event-ID` and goes on after it. Open streams are counted per tenant
in Redis (a sorted set of stream ids scored by expiry, refreshed while a stream lives), so the
cap holds across API processes and a process that dies frees its streams within MIN_STREAM_TTL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from database.engine import Database
from services.errors import RateLimited, ServiceUnavailable
from services.tenant_events.feed import MAX_LIMIT, read_feed

KEY_PREFIX = "postroom:feed:streams:"
# Long enough for a slow heartbeat cycle, short enough to free a dead process's slots soon.
MIN_STREAM_TTL_S = 60.0


def sse_frame(item: dict[str, Any]) -> bytes:
    """One event in SSE framing; the JSON is one line, so one `data:` field carries it."""
    body = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
    return f"id: {item['seq']}\nevent: {item['type']}\ndata: {body}\n\n".encode()


class StreamSlot:
    """One of a tenant's `max_streams` open streams, held in Redis."""

    def __init__(self, redis: Redis, tenant_id: uuid.UUID, ttl_s: float) -> None:
        self.redis, self.key, self.ttl_s = redis, f"{KEY_PREFIX}{tenant_id}", ttl_s
        self.member = uuid.uuid4().hex

    async def acquire(self, max_streams: int) -> None:
        """Take a slot or raise RateLimited (429): add first, then count, so two streams
        racing for the last slot cannot both get it."""
        now = time.time()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self.key, "-inf", now)
                pipe.zadd(self.key, {self.member: now + self.ttl_s})
                pipe.zcard(self.key)
                pipe.expire(self.key, int(self.ttl_s) + 1)
                _, _, count, _ = await pipe.execute()
        except RedisError:
            # Without the count the cap cannot hold: no stream (the paged feed still works).
            raise ServiceUnavailable("Live streams are unavailable; page the feed.") from None
        if count > max_streams:
            await self.release()
            raise RateLimited(
                f"This tenant already has {max_streams} feed streams open.",
                retry_after=self.ttl_s,
            )

    async def refresh(self) -> None:
        with contextlib.suppress(RedisError):  # a blip: the slot outlives a missed refresh
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(self.key, {self.member: time.time() + self.ttl_s})
                pipe.expire(self.key, int(self.ttl_s) + 1)
                await pipe.execute()

    async def release(self) -> None:
        with contextlib.suppress(RedisError):  # it expires on its own
            await self.redis.zrem(self.key, self.member)


async def open_stream(
    db: Database,
    redis: Redis,
    *,
    tenant_id: uuid.UUID,
    after: int,
    poll_s: float,
    heartbeat_s: float,
    max_streams: int,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """Take a stream slot (429 when the tenant has none left), then the stream's frames."""
    slot = StreamSlot(redis, tenant_id, max(MIN_STREAM_TTL_S, 3 * heartbeat_s))
    await slot.acquire(max_streams)
    return _frames(
        db,
        slot,
        tenant_id=tenant_id,
        after=after,
        poll_s=poll_s,
        heartbeat_s=heartbeat_s,
        disconnected=disconnected,
    )


async def _frames(
    db: Database,
    slot: StreamSlot,
    *,
    tenant_id: uuid.UUID,
    after: int,
    poll_s: float,
    heartbeat_s: float,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    try:
        # The reconnection delay a browser's EventSource uses after a drop.
        yield b"retry: 2000\n\n"
        quiet_since = refreshed = time.monotonic()
        while not await disconnected():
            if time.monotonic() - refreshed >= slot.ttl_s / 3:
                await slot.refresh()
                refreshed = time.monotonic()
            items, after = await read_feed(db, tenant_id=tenant_id, after=after, limit=MAX_LIMIT)
            for item in items:
                yield sse_frame(item)
            if items:
                quiet_since = time.monotonic()
                if len(items) == MAX_LIMIT:
                    continue  # a backlog: the next page at once
            elif time.monotonic() - quiet_since >= heartbeat_s:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(poll_s)
    finally:
        # Cancelled on disconnect too; the slot must go back whatever ends the stream.
        await asyncio.shield(slot.release())
