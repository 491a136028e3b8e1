"""Worker-side logs and metrics through Celery signals (imported by worker.app).

- `setup_logging`: Celery leaves logging to us, so its own lines (ready, received, succeeded)
  are rendered like ours (JSON, or console text under `make dev`); its per-run lines for idle
  housekeeping tasks drop to DEBUG.
- task_prerun/postrun/retry/failure: runs, retries, failures and durations by task, written
  to the shared multiprocess directory when PROMETHEUS_MULTIPROC_DIR is set.
- `beat_init` (worker.beat_lock): a second beat waits on standby instead of ticking.
- before a task runs, its `request_id` (custom message header set by worker.dispatch),
  `task_id` and name are bound to the log context, for every task, event-backed or not.
"""

from __future__ import annotations

import ast
import logging
import time
from typing import Any

import structlog
from celery import Task
from celery.signals import (
    after_task_publish,
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
)

from database.task_names import HOUSEKEEPING_PREFIX
from services import metrics
from services.logs import configure_logging
from settings import get_settings
from worker import beat_lock  # noqa: F401  (beat_init receiver: exactly one beat)
from worker.config import Queue

_started: dict[str, float] = {}
log = structlog.get_logger(__name__)
CLASSES = frozenset(q.value for q in Queue)


# Beat's housekeeping tasks (the outbox sweep runs every 5 s) would fill the log with Celery's
# per-run lines. Those go to DEBUG: beat's "Sending due task", the worker's "received", a run
# discarded because it expired in the queue, and "succeeded" when the run reports nothing
# done. A run that did something, or failed, stays at its level.
_PER_RUN_LOGGERS = (
    "celery.beat",
    "celery.worker.strategy",
    "celery.worker.request",
    "celery.app.trace",
)


def _task_name(record: logging.LogRecord) -> str | None:
    data = getattr(record, "data", None)  # Celery's received/succeeded lines carry a dict
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data["name"]
    args = record.args
    if not (isinstance(args, tuple) and len(args) == 2):
        return None
    if record.name == "celery.beat":
        return str(args[1])  # "Scheduler: Sending due task %s (%s)": entry name, task
    if record.name == "celery.worker.request" and str(record.msg).startswith("Discarding"):
        return str(args[0])  # a run that expired in the queue ("expires" in the schedule)
    return None


def _did_work(record: logging.LogRecord) -> bool:
    """Housekeeping tasks return counts; a run whose every count is 0 was idle."""
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or "return_value" not in data:
        return False
    try:
        result = ast.literal_eval(str(data["return_value"]))
    except (ValueError, SyntaxError):
        return True  # not the counts we know: keep the line
    if not isinstance(result, dict):
        return True
    return any(isinstance(v, int | float) and v for v in result.values())


class QuietHousekeeping(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        name = _task_name(record)
        if name is None or not name.startswith(HOUSEKEEPING_PREFIX) or _did_work(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


@setup_logging.connect
def _json_logging(loglevel: Any = None, **_: Any) -> None:
    settings = get_settings()
    level = loglevel if isinstance(loglevel, str) else settings.log_level
    configure_logging(level=level, json=settings.log_json)
    for name in _PER_RUN_LOGGERS:
        logger = logging.getLogger(name)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, QuietHousekeeping)]
        logger.addFilter(QuietHousekeeping())


def request_id_of(task: Task) -> str | None:
    """Custom headers arrive as attributes of the request (and, on newer Celery, in headers)."""
    value = getattr(task.request, "request_id", None)
    headers = getattr(task.request, "headers", None)
    if value is None and isinstance(headers, dict):
        value = headers.get("request_id")
    return value if isinstance(value, str) else None


def observe_wait(task: Task) -> None:
    """Publish-to-start time of a first run, by the class of the lane it came from.

    `published_at` is a custom header worker.dispatch sets (wall clock: publisher and worker
    may be different hosts, so this is as good as their clocks agree). Retries and delayed
    runs (a countdown, an eta) are left out: their wait is on purpose.
    """
    request = task.request
    published = getattr(request, "published_at", None)
    headers = getattr(request, "headers", None)
    if published is None and isinstance(headers, dict):
        published = headers.get("published_at")
    if not isinstance(published, (int, float)) or request.retries or request.eta:
        return
    queue = ((request.delivery_info or {}).get("routing_key") or "").split(".", 1)[0]
    if queue not in CLASSES:
        return
    metrics.TASK_WAIT.labels(**{"class": queue}).observe(max(0.0, time.time() - published))


@task_prerun.connect
def _on_prerun(task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    _started[task_id] = time.perf_counter()
    try:
        observe_wait(task)
    except Exception as exc:  # a metric must never stop a task
        log.debug("wait_metric_failed", error=type(exc).__name__)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=request_id_of(task), task_id=task_id, task=task.name
    )


@task_postrun.connect
def _on_postrun(
    task_id: str | None = None, task: Task | None = None, state: str | None = None, **_: Any
) -> None:
    if task_id is None or task is None:
        return
    started = _started.pop(task_id, None)
    if started is not None:
        metrics.TASK_DURATION.labels(task=task.name).observe(time.perf_counter() - started)
    metrics.TASK_RUNS.labels(task=task.name, state=state or "UNKNOWN").inc()


@task_retry.connect
def _on_retry(sender: Task | None = None, **_: Any) -> None:
    metrics.TASK_RETRIES.labels(task=getattr(sender, "name", "unknown")).inc()


@task_failure.connect
def _on_failure(
    sender: Task | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    metrics.TASK_FAILURES.labels(
        task=getattr(sender, "name", "unknown"), exception=type(exception).__name__
    ).inc()


@after_task_publish.connect
def _on_publish(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    name = (headers or {}).get("task") or sender or "unknown"
    metrics.JOBS.labels(endpoint=metrics.current_endpoint(), task=name).inc()
