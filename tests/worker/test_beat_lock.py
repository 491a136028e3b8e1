"""Two `celery beat` processes on one broker: one ticks, the other waits and takes over."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

from tests.helpers import ENV, wait_until
from tests.peers import VENV_BIN, Process, RedisServer


def beat(env: dict[str, str], name: str) -> Process:
    schedule = Path(tempfile.mkdtemp(prefix="postroom-beat-")) / "schedule"
    return Process(
        name,
        [
            str(VENV_BIN / "celery"),
            "-A",
            "worker.app",
            "beat",
            "-l",
            "INFO",
            "--schedule",
            str(schedule),
        ],
        # Beat's per-tick "Sending due task" line for housekeeping tasks is DEBUG.
        {**env, "POSTROOM_LOG_LEVEL": "DEBUG"},
    )


def sent(proc: Process) -> int:
    return proc.log().count("Sending due task sweep-outbox")


def test_a_second_beat_stands_by_until_the_first_stops() -> None:
    redis = RedisServer().start()
    env = {**ENV, "POSTROOM_REDIS_URL": redis.url, "POSTROOM_OUTBOX_SWEEP_INTERVAL_S": "1"}
    first, second = beat(env, "beat-a").start(), None
    try:
        first.wait_log('"beat_leader"', timeout=30)
        second = beat(env, "beat-b").start()
        second.wait_log('"beat_standby"', timeout=30)
        # The leader ticks twice more while the second stands by, and the second sends nothing.
        standing_by = sent(first)
        wait_until(lambda: sent(first) >= standing_by + 2, timeout=15, message="two more ticks")
        assert sent(second) == 0
        first.stop(signal.SIGTERM)
        started = time.monotonic()
        second.wait_log('"beat_leader"', timeout=15)
        took_over_after = time.monotonic() - started
        second.wait_log("Sending due task sweep-outbox", timeout=10)
        assert took_over_after < 5  # the first released the lease on its way out
    finally:
        first.stop()
        if second:
            second.stop()
        redis.stop()


def test_the_leader_keeps_its_lease_when_redis_comes_back_empty() -> None:
    """A Redis restart with nothing on disk drops the lease key: the leader must take it back,
    not stop (otherwise nothing re-publishes what the restart lost)."""
    import redis as redis_lib

    from worker.beat_lock import LOCK_KEY, RENEW_EVERY_S

    server = RedisServer().start()
    env = {**ENV, "POSTROOM_REDIS_URL": server.url, "POSTROOM_OUTBOX_SWEEP_INTERVAL_S": "1"}
    leader = beat(env, "beat-flush").start()
    client = redis_lib.Redis.from_url(server.url)
    try:
        leader.wait_log('"beat_leader"', timeout=30)
        client.flushall()
        assert client.get(LOCK_KEY) is None
        # Its next renewal finds the key gone and writes it again, and it goes on ticking.
        wait_until(
            lambda: client.get(LOCK_KEY), timeout=RENEW_EVERY_S + 10, message="the lease again"
        )
        assert leader.proc is not None and leader.proc.poll() is None, leader.log()[-2000:]
        before = sent(leader)
        wait_until(lambda: sent(leader) > before, timeout=15, message="a tick after the flush")
        assert leader.proc.poll() is None, leader.log()[-2000:]
    finally:
        leader.stop()
        client.close()
        server.stop()
