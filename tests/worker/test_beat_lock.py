"""Two `celery beat` processes on one broker: one ticks, the other waits and takes over."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

from tests.conftest import ENV
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
        env,
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
        time.sleep(3)
        assert sent(first) >= 2
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
