"""Exactly one beat: a Redis lease taken before the scheduler ticks.

A second `celery beat` (a double deploy, a forgotten terminal) waits on standby instead of
publishing every periodic task twice, and takes over within seconds when the leader stops.
The lease lives in the broker's Redis, so a beat that can reach the broker can see it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import redis
import structlog
from celery.signals import beat_init

from settings import get_settings

log = structlog.get_logger("postroom.beat")

LOCK_KEY = "postroom:beat:leader"
TTL_S = 30
RENEW_EVERY_S = 10
POLL_S = 2.0

# Renew our lease; if the key is gone (Redis restarted empty, or it expired while Redis was
# unreachable) take it back; stop only when another beat holds it.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def _client() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().redis_url, socket_timeout=5, socket_connect_timeout=2
    )


def acquire(client: redis.Redis, token: str) -> None:
    """Block until this process holds the lease (SIGTERM while waiting still stops beat)."""
    announced = False
    while True:
        try:
            if client.set(LOCK_KEY, token, nx=True, ex=TTL_S):
                log.info("beat_leader", lease=token)
                return
            if not announced:
                holder: Any = client.get(LOCK_KEY)
                if isinstance(holder, bytes):
                    holder = holder.decode()
                log.warning(
                    "beat_standby",
                    holder=holder,
                    hint="another beat is running; this one waits to take over",
                )
                announced = True
        except redis.RedisError as exc:
            log.warning("beat_lock_unreachable", error=type(exc).__name__)
        time.sleep(POLL_S)


def _keep(client: redis.Redis, token: str) -> None:
    while True:
        time.sleep(RENEW_EVERY_S)
        try:
            held = client.eval(_RENEW, 1, LOCK_KEY, token, TTL_S)
        except redis.RedisError as exc:  # the broker is down: nothing can be published anyway
            log.warning("beat_lock_renew_failed", error=type(exc).__name__)
            continue
        if not held:
            log.error("beat_lock_lost", lease=token, action="stopping this beat")
            os.kill(os.getpid(), signal.SIGTERM)
            return


def release(client: redis.Redis, token: str) -> None:
    # If Redis is unreachable the lease simply expires after TTL_S.
    with contextlib.suppress(redis.RedisError):
        client.eval(_RELEASE, 1, LOCK_KEY, token)


@beat_init.connect
def _become_leader(**_: Any) -> None:
    client = _client()
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    acquire(client, token)
    atexit.register(release, client, token)
    threading.Thread(target=_keep, args=(client, token), name="beat-lock", daemon=True).start()
