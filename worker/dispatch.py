"""Publishing by task name: what the API and the outbox use, without importing task code.

Two paths to the same Redis lists. `publish` goes through Celery's own producer (used inside
workers, where blocking is fine). `AsyncPublisher` is for the API's event loop: Celery's
producer is synchronous and blocked the loop for milliseconds per webhook (measured in
`make bench`), so the API builds the very same message with Celery's `as_task_v2` and
kombu's envelope layout, and does only the LPUSH itself, with a hard timeout.

Both paths pick the same queue: the task's latency class (`short`, `bulk`, `periodic`) and,
within a class, the shorter of its tenant's candidate lanes (worker.config.lane_choices,
"two choices"), so tenants take turns and a backlogged tenant does not bury a light one that
happens to share a lane with it.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
import structlog
from celery import Celery

from services import metrics
from services.events.unit_of_work import Job
from worker.config import Queue, lane_choices, route_for, route_queue

log = structlog.get_logger(__name__)

# kombu's Redis transport separator and priority steps, as configured in worker/app.py.
PRIORITY_SEP = ":"

# Task kwargs shown as they are in a message's argsrepr/kwargsrepr (what Flower, Celery's
# events and its log lines display): ids and flags. Any other key is shown by name only, so a
# task that one day takes free text cannot put it on Flower's screen by accident.
REPR_KEYS = frozenset(
    {
        "event_id",
        "tenant_id",
        "user_id",
        "account_id",
        "message_id",
        "message_ids",
        "workflow",
        "full",
        "permanent",
    }
)
HIDDEN = "..."


def kwargs_repr(kwargs: dict[str, Any]) -> str:
    """The kwargsrepr of a task message: the REPR_KEYS values, other keys' values hidden."""
    shown = {k: v if k in REPR_KEYS else HIDDEN for k, v in kwargs.items()}
    return orjson.dumps(shown, default=str).decode()


# Tenants' lane weights (`postroom admin set-weight`; the tenant row holds them, this Redis
# hash mirrors the ones that are not 1). Publishers re-read it at most every WEIGHTS_TTL_S.
WEIGHTS_KEY = "postroom:lane-weights"
WEIGHTS_TTL_S = 30.0


def publish_weights(redis_url: str, weights: dict[str, int]) -> None:
    """Replace the weights hash with the database's (every tenant whose weight is not 1)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.delete(WEIGHTS_KEY)
        if weights:
            pipe.hset(WEIGHTS_KEY, mapping=weights)  # type: ignore[arg-type]
        pipe.execute()
    finally:
        client.close()


class Weights:
    """One process's copy of the weights hash; a tenant not in it has weight 1."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.loaded_at = float("-inf")

    def stale(self) -> bool:
        return time.monotonic() - self.loaded_at > WEIGHTS_TTL_S

    def load(self, raw: dict[Any, Any] | None) -> None:
        """Take a fresh HGETALL answer; None (Redis failed) keeps the old copy for a period."""
        self.loaded_at = time.monotonic()
        if raw is None:
            return
        values = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else str(k)
            try:
                values[key] = max(1, int(v))
            except ValueError:
                continue
        self.values = values

    def of(self, tenant_id: Any) -> int:
        return self.values.get(str(tenant_id), 1) if tenant_id else 1


def lane_key(kwargs: dict[str, Any], explicit: str | None) -> str | None:
    """Whose turn a task takes: its tenant's; a webhook not yet tied to one, its grant's."""
    tenant = kwargs.get("tenant_id")
    return f"tenant:{tenant}" if tenant else (f"grant:{explicit}" if explicit else None)


def candidates(
    task_name: str, kwargs: dict[str, Any], *, task_id: str, weights: Weights, key: str | None
) -> tuple[Queue, list[str]]:
    """(class, candidate lane queues, home lane first) of one task message."""
    cls = route_queue(task_name, kwargs)
    weight = weights.of(kwargs.get("tenant_id"))
    return cls, lane_choices(cls, lane_key(kwargs, key), spread=task_id, weight=weight)


def destination(
    task_name: str, kwargs: dict[str, Any], *, task_id: str, weights: Weights, key: str | None
) -> tuple[Queue, str]:
    """(class, home lane) of one task message: where it goes while its lanes are equally long."""
    cls, lanes = candidates(task_name, kwargs, task_id=task_id, weights=weights, key=key)
    return cls, lanes[0]


def ahead_keys(queue: str, priority: int) -> list[str]:
    """The lists of a lane a task of `priority` waits behind: its own step and the ones before.

    A lane's depth for the choice is the sum of their LLENs (kombu pops priority 0 first).
    """
    return [queue_key(queue, p) for p in range(priority + 1)]


# Push messages, each to the shortest of its candidate lanes, in one round trip with their
# LLENs. ARGV[1]: the number of messages; then per message ARGV holds its priority steps, its
# number of candidate lanes, the envelope before and after its delivery_info (which names the
# chosen lane: kombu puts an unacked message back by it) and its candidate lanes; KEYS holds
# each candidate's ahead_keys in the same order (its own priority's list last). Ties go to
# the first candidate (home). A message pushed here counts in the LLENs of the ones after it,
# exactly as if each had been pushed by a script call of its own. Returns the chosen lanes'
# indexes.
PUSH_SHORTEST = """
local k, a = 0, 2
local chosen = {}
for m = 1, tonumber(ARGV[1]) do
  local steps, lanes = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local best, least = 1, nil
  for c = 1, lanes do
    local depth = 0
    for p = 1, steps do depth = depth + redis.call('LLEN', KEYS[k + (c - 1) * steps + p]) end
    if least == nil or depth < least then best, least = c, depth end
  end
  local q = ARGV[a + 3 + best]
  local info = '{"exchange":"' .. q .. '","routing_key":"' .. q .. '"}'
  redis.call('LPUSH', KEYS[k + best * steps], ARGV[a + 2] .. info .. ARGV[a + 3])
  chosen[m] = best - 1
  k = k + lanes * steps
  a = a + 4 + lanes
end
return chosen
"""
# At most this many messages per script call: Redis runs a script alone, keep it short.
PUSH_BATCH = 64


def delivery_info(queue: str) -> dict[str, str]:
    """Exactly what PUSH_SHORTEST writes for its chosen lane (orjson keeps key order)."""
    return {"exchange": queue, "routing_key": queue}


def shortest_lane(client: redis.Redis, lanes: list[str], priority: int) -> str:
    """The synchronous path's choice: one pipelined round of LLENs, home lane on a tie or error.

    Workers only (a second round trip is fine there); the API's path is PUSH_SHORTEST.
    """
    if len(lanes) == 1:
        return lanes[0]
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        for key in ahead_keys(lane, priority):
            pipe.llen(key)
    lens = pipe.execute()
    steps = priority + 1
    depths = [sum(lens[i * steps : (i + 1) * steps]) for i in range(len(lanes))]
    return lanes[depths.index(min(depths))]


_sync_weights = Weights()
_sync_redis: dict[str, redis.Redis] = {}


def _client_for(app: Celery) -> redis.Redis:
    """A small synchronous client on the broker (publish runs in workers)."""
    url = str(app.conf.broker_url)
    client = _sync_redis.get(url)
    if client is None:
        client = _sync_redis[url] = redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1
        )
    return client


def _weights_for(app: Celery) -> Weights:
    """The weights, refreshed through the synchronous client."""
    if _sync_weights.stale():
        client = _client_for(app)
        try:
            _sync_weights.load(client.hgetall(WEIGHTS_KEY))  # type: ignore[arg-type]
        except Exception as exc:  # weights are an optimisation: weight 1 until Redis answers
            log.warning("lane_weights_unavailable", error=type(exc).__name__)
            _sync_weights.load(None)
    return _sync_weights


def with_event(kwargs: dict[str, Any] | None, event_id: uuid.UUID | None) -> dict[str, Any]:
    """A task's keywords with its event's id; a task without an event (a tenant's model
    refit) gets none."""
    if event_id is None:
        return dict(kwargs or {})
    return {**(kwargs or {}), "event_id": str(event_id)}


def publish(
    app: Celery,
    *,
    task_name: str,
    event_id: uuid.UUID | None,
    task_id: str,
    kwargs: dict[str, Any] | None = None,
    request_id: str | None = None,
    lane: str | None = None,
    countdown: float | None = None,
) -> bool:
    """Send the task for an event; False (logged) when the broker cannot take it right now.

    No retries here: the event is already committed, and the outbox sweeper publishes any
    event that was not picked up in time. `lane` is a key for tasks without a tenant yet.
    """
    route = route_for(task_name)
    kwargs = with_event(kwargs, event_id)
    try:
        _, lanes = candidates(
            task_name, kwargs, task_id=task_id, weights=_weights_for(app), key=lane
        )
        queue = _pick(app, lanes, route.priority)
        app.send_task(
            task_name,
            kwargs=kwargs,
            argsrepr="()",
            kwargsrepr=kwargs_repr(kwargs),
            task_id=task_id,
            queue=queue,
            priority=route.priority,
            # published_at: the wait metric (worker.observability.observe_wait).
            headers={
                "published_at": time.time(),
                **({"request_id": request_id} if request_id else {}),
            },
            countdown=countdown,
            retry=False,
        )
    except Exception as exc:  # the broker is down or slow: the outbox will deliver later
        log.warning(
            "publish_failed", task=task_name, event_id=str(event_id), error=type(exc).__name__
        )
        return False
    return True


def _pick(app: Celery, lanes: list[str], priority: int) -> str:
    try:
        return shortest_lane(_client_for(app), lanes, priority)
    except Exception as exc:  # the choice is an optimisation: the home lane still works
        log.warning("lane_depths_unavailable", error=type(exc).__name__)
        return lanes[0]


def queue_key(queue: str, priority: int) -> str:
    """The Redis list kombu reads for this queue and priority (priority 0 is the bare name)."""
    return f"{queue}{PRIORITY_SEP}{priority}" if priority else queue


@dataclass
class _Pending:
    """One message waiting for its script call; `chosen` gets the lane it went to."""

    lanes: list[str]
    priority: int
    head: bytes
    tail: bytes
    chosen: asyncio.Future[str]


class AsyncPublisher:
    """LPUSH Celery task messages from an asyncio loop, giving up after `timeout` seconds."""

    def __init__(self, app: Celery, redis_url: str, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.weights = Weights()
        self.push_shortest = self.redis.register_script(PUSH_SHORTEST)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def refresh_weights(self) -> None:
        """At most once per WEIGHTS_TTL_S, bounded by the publish timeout."""
        if not self.weights.stale():
            return
        self.weights.loaded_at = time.monotonic()  # one refresh at a time
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self.redis.hgetall(WEIGHTS_KEY)
        except Exception as exc:  # weight 1 until Redis answers; never hold the webhook
            log.warning("lane_weights_unavailable", error=type(exc).__name__)
            raw = None
        self.weights.load(raw)

    def message(
        self,
        *,
        task_name: str,
        task_id: str,
        kwargs: dict[str, Any],
        request_id: str | None,
        lane: str | None = None,
    ) -> tuple[str, bytes]:
        """(Redis list of the home lane, message naming it): what lands there on a tie."""
        lanes, priority, payload = self.prepare(
            task_name=task_name, task_id=task_id, kwargs=kwargs, request_id=request_id, lane=lane
        )
        return queue_key(lanes[0], priority), payload

    def prepare(
        self,
        *,
        task_name: str,
        task_id: str,
        kwargs: dict[str, Any],
        request_id: str | None,
        lane: str | None = None,
    ) -> tuple[list[str], int, bytes]:
        """(candidate lanes, Redis priority, message naming the home lane) of one task."""
        route = route_for(task_name)
        _, lanes = candidates(task_name, kwargs, task_id=task_id, weights=self.weights, key=lane)
        queue = lanes[0]
        # argsrepr/kwargsrepr given: Celery's saferepr of them was a fifth of this function,
        # and kwargs_repr shows ids only.
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id,
            task_name,
            args=(),
            kwargs=kwargs,
            root_id=task_id,
            argsrepr="()",
            kwargsrepr=kwargs_repr(kwargs),
        )
        if request_id:
            headers["request_id"] = request_id
        headers["published_at"] = time.time()  # the wait metric (worker.observability)
        properties.update(
            {
                "delivery_mode": 2,
                "priority": route.priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": delivery_info(queue),
            }
        )
        envelope = {
            "body": base64.b64encode(orjson.dumps(body)).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        return lanes, route.priority, orjson.dumps(envelope)

    async def push(self, lanes: list[str], priority: int, payload: bytes) -> str:
        """LPUSH to the shortest candidate lane (LLENs and push in one script); the lane chosen.

        Messages pushed while a script call is on its way go together in the next one: under
        load one round trip carries many, and a lone message goes at once.
        """
        return await self._enqueue(lanes, priority, payload)

    def _enqueue(self, lanes: list[str], priority: int, payload: bytes) -> asyncio.Future[str]:
        """Queue one message for the next script call; the future of the lane it went to."""
        home = orjson.dumps(delivery_info(lanes[0]))
        head, found, tail = payload.partition(home)
        if not found:
            raise ValueError("message without its delivery_info")
        loop = asyncio.get_running_loop()
        pending = _Pending(lanes, priority, head, tail, loop.create_future())
        self._pending.append(pending)
        flusher = self._flusher
        # None, or (its loop torn down without cancelling it) a task that will never run again.
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return pending.chosen

    async def _flush(self) -> None:
        """Send what is pending, one script call at a time, until nothing is."""
        try:
            loop = asyncio.get_running_loop()
            while self._pending:
                # A done one's publish gave up; one of a loop torn down has no one waiting (and
                # setting its result would raise): neither is sent, the outbox sweeper has them.
                batch = [
                    p
                    for p in self._pending[:PUSH_BATCH]
                    if not p.chosen.done() and p.chosen.get_loop() is loop
                ]
                del self._pending[:PUSH_BATCH]
                if not batch:
                    continue
                keys: list[str] = []
                args: list[Any] = [len(batch)]
                for p in batch:
                    keys += [k for q in p.lanes for k in ahead_keys(q, p.priority)]
                    args += [p.priority + 1, len(p.lanes), p.head, p.tail, *p.lanes]
                try:
                    chosen = await self.push_shortest(keys=keys, args=args)
                except asyncio.CancelledError:
                    for p in batch:
                        p.chosen.cancel()
                    raise
                except Exception as exc:  # each publish logs it; the outbox sweeper delivers
                    for p in batch:
                        if not p.chosen.done():
                            p.chosen.set_exception(exc)
                    continue
                for p, index in zip(batch, chosen, strict=True):
                    if not p.chosen.done():
                        p.chosen.set_result(p.lanes[int(index)])
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def publish(
        self,
        *,
        task_name: str,
        event_id: uuid.UUID | None,
        task_id: str,
        kwargs: dict[str, Any] | None = None,
        request_id: str | None = None,
        lane: str | None = None,
    ) -> bool:
        await self.refresh_weights()
        lanes, priority, payload = self.prepare(
            task_name=task_name,
            task_id=task_id,
            kwargs=with_event(kwargs, event_id),
            request_id=request_id,
            lane=lane,
        )
        try:
            # asyncio.timeout, not wait_for: no task of its own per message.
            async with asyncio.timeout(self.timeout):
                await self.push(lanes, priority, payload)
        except Exception as exc:  # down or slow: the outbox sweeper delivers it later
            log.warning(
                "publish_failed", task=task_name, event_id=str(event_id), error=type(exc).__name__
            )
            return False
        # Celery's after_task_publish signal does not see this path: count it here.
        metrics.JOBS.labels(endpoint=metrics.current_endpoint(), task=task_name).inc()
        return True

    async def publish_many(self, jobs: Sequence[Job], *, endpoint: str | None = None) -> int:
        """Publish committed events' tasks together: they are queued at once, so they go in
        one script call (up to PUSH_BATCH each), with one timeout for all; how many went.

        For a batch of webhooks stored by one INSERT (services.events.ingest.IngestBatcher).
        A failure is logged once for the batch: the outbox sweeper publishes those later.
        `endpoint` labels the published-jobs metric (the caller's task has no request).
        """
        if not jobs:
            return 0
        await self.refresh_weights()
        chosen = [
            self._enqueue(
                *self.prepare(
                    task_name=job.task_name,
                    task_id=job.task_id,
                    kwargs={**job.kwargs, "event_id": str(job.event_id)},
                    request_id=job.request_id,
                    lane=job.lane,
                )
            )
            for job in jobs
        ]
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*chosen, return_exceptions=True)
        except TimeoutError as exc:
            error = exc
            for future in chosen:
                future.cancel()  # not sent yet: the flusher skips it
        sent = 0
        for job, future in zip(jobs, chosen, strict=True):
            if future.cancelled() or future.exception() is not None:
                error = error or future.exception()
                continue
            sent += 1
            metrics.JOBS.labels(
                endpoint=endpoint or metrics.current_endpoint(), task=job.task_name
            ).inc()
        if sent < len(jobs):
            log.warning(
                "publish_failed",
                task=jobs[0].task_name,
                events=len(jobs) - sent,
                error=type(error).__name__ if error else "CancelledError",
            )
        return sent

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        for p in self._pending:
            p.chosen.cancel()
        self._pending.clear()
        await self.redis.aclose()
