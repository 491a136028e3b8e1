"""Worker-side logs and metrics through Celery signals (imported by worker.app).

- `setup_logging`: Celery leaves logging to us, so its own lines (ready, received, succeeded)
  are JSON like ours instead of its text format.
- task_prerun/postrun/retry/failure: runs, retries, failures and durations by task, written
  to the shared multiprocess directory when PROMETHEUS_MULTIPROC_DIR is set.
- `beat_init` (worker.beat_lock): a second beat waits on standby instead of ticking.
- before a task runs, its `request_id` (custom message header set by worker.dispatch),
  `task_id` and name are bound to the log context, for every task, event-backed or not.
"""

from __future__ import annotations

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

from services import metrics
from services.logs import configure_logging
from settings import get_settings
from worker import beat_lock  # noqa: F401  (beat_init receiver: exactly one beat)

_started: dict[str, float] = {}


@setup_logging.connect
def _json_logging(loglevel: Any = None, **_: Any) -> None:
    settings = get_settings()
    level = loglevel if isinstance(loglevel, str) else settings.log_level
    configure_logging(level=level, json=settings.log_json)


def request_id_of(task: Task) -> str | None:
    """Custom headers arrive as attributes of the request (and, on newer Celery, in headers)."""
    value = getattr(task.request, "request_id", None)
    headers = getattr(task.request, "headers", None)
    if value is None and isinstance(headers, dict):
        value = headers.get("request_id")
    return value if isinstance(value, str) else None


@task_prerun.connect
def _on_prerun(task_id: str | None = None, task: Task | None = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    _started[task_id] = time.perf_counter()
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
