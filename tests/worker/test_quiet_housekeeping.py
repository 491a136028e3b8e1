"""Beat's housekeeping runs every few seconds: an idle run writes nothing at INFO (neither our
lines nor Celery's received/succeeded), a run that did something says so."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from tests.helpers import WEBHOOK_SECRET, notification, sign
from tests.peers import Process
from worker.observability import QuietHousekeeping

SWEEP = "postroom.maintenance.sweep_outbox"


def info_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("info", "warning", "error"):
            out.append(entry)
    return out


async def run_sweep(app: Any) -> tuple[str, dict[str, int]]:
    result = app.send_task(SWEEP)
    return result.id, await asyncio.to_thread(result.get, timeout=30)


async def wait_log(worker: Process, needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while needle not in worker.log():
        assert time.monotonic() < deadline, f"worker did not log {needle!r}"
        await asyncio.sleep(0.1)


async def test_an_idle_sweep_logs_nothing_at_info_and_a_republish_does(
    empty_database: None, worker: Process, settings: Any, db: Any
) -> None:
    # The sweep looks at every tenant's events: idle means no other test's event is due.
    from database.engine import driver_pool
    from services.events.ingest import ingest_nylas
    from worker.app import make_celery

    app = make_celery(settings)  # with the result backend: wait for each run
    start = len(worker.log())
    idle = [await run_sweep(app) for _ in range(3)]
    assert [r for _, r in idle] == [{"found": 0, "published": 0}] * 3

    # An event stored but never published (as when the broker was down): the next sweep
    # publishes it, and that run is worth a line.
    body = json.dumps(notification("message.created", {"id": "quiet-1"}, grant_id="g-x")).encode()
    # On the webhook's own kind of pool (database.engine.driver_pool), as the API stores one.
    pool = await driver_pool(settings, max_size=1)
    try:
        ingested = await ingest_nylas(
            pool,
            raw=body,
            signature=sign(body, WEBHOOK_SECRET),
            content_encoding=None,
            secret=WEBHOOK_SECRET,
            max_bytes=settings.webhook_max_body_bytes,
            stale_after_s=0,
            max_age_s=settings.webhook_max_age_s,
        )
    finally:
        await pool.close()
    assert ingested.created
    busy_id, busy = await run_sweep(app)
    assert busy == {"found": 1, "published": 1}
    await wait_log(worker, "outbox_republished")
    await wait_log(worker, f"{busy_id}] succeeded")
    await asyncio.sleep(0.5)  # the idle runs' own lines, from other pool processes

    lines = info_lines(worker.log()[start:])
    for task_id, _ in idle:
        assert not [x for x in lines if task_id in json.dumps(x)], task_id
    republished = [x for x in lines if x["event"] == "outbox_republished"]
    assert republished and republished[0]["found"] == 1 and republished[0]["published"] == 1
    # Celery's own lines for the run that worked stay at INFO.
    assert [x for x in lines if busy_id in x["event"] and "succeeded" in x["event"]]


def celery_record(logger: str, msg: str, args: Any, data: dict[str, Any] | None) -> Any:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, msg, args, None)
    if data is not None:
        record.data = data
    return record


def test_the_filter_demotes_idle_housekeeping_lines_and_keeps_the_rest() -> None:
    quiet = QuietHousekeeping()
    beat = logging.getLogger("celery.beat")
    beat_line = celery_record(
        "celery.beat", "Scheduler: Sending due task %s (%s)", ("sweep-outbox", SWEEP), None
    )
    idle = celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] succeeded",
        None,
        {"name": SWEEP, "id": "1", "return_value": "{'found': 0, 'published': 0}"},
    )
    busy = celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] succeeded",
        None,
        {"name": SWEEP, "id": "2", "return_value": "{'found': 3, 'published': 3}"},
    )
    event = celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] succeeded",
        None,
        {"name": "postroom.events.process", "id": "3", "return_value": "{'found': 0}"},
    )
    expired = celery_record(
        "celery.worker.request", "Discarding revoked task: %s[%s]", (SWEEP, "4"), None
    )
    old = beat.level
    try:
        beat.setLevel(logging.INFO)
        logging.getLogger("celery.app.trace").setLevel(logging.INFO)
        assert quiet.filter(beat_line) is False and beat_line.levelname == "DEBUG"
        assert quiet.filter(idle) is False
        logging.getLogger("celery.worker.request").setLevel(logging.INFO)
        assert quiet.filter(expired) is False
        assert quiet.filter(busy) is True and busy.levelno == logging.INFO
        assert quiet.filter(event) is True and event.levelno == logging.INFO
        # With DEBUG on, the demoted line is still written, at DEBUG.
        beat.setLevel(logging.DEBUG)
        again = celery_record("celery.beat", beat_line.msg, beat_line.args, None)
        assert quiet.filter(again) is True and again.levelno == logging.DEBUG
    finally:
        beat.setLevel(old)
        logging.getLogger("celery.app.trace").setLevel(logging.NOTSET)
        logging.getLogger("celery.worker.request").setLevel(logging.NOTSET)
