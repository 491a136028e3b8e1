"""Prometheus metrics: counters written by API and worker processes, gauges kept fresh enough.

Processes on one host share `PROMETHEUS_MULTIPROC_DIR` (prometheus-client multiprocess mode):
every API and prefork worker process writes its counters there, and the API's `GET /metrics`
sums the directory. Without that variable the metrics stay in the process (tests, one process).

The gauges that need Redis and PostgreSQL (queue depths, events by status, dead letters) are
read by one refresh at a time per process and kept for a few seconds (`Cached`): a scrape
costs the same whatever the data size and however many scrapes arrive together.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from database.engine import Database
from database.repositories import stats
from database.repositories.tenant_events import deliveries as deliveries_repo

__all__ = ["CONTENT_TYPE_LATEST", "Cached", "Snapshot", "exposition", "queue_keys", "snapshot"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_ENV):
    # The directory must exist before the first metric is made. Files are named per process:
    # host name + pid, because containers sharing the directory each have their own pid 1, 7...
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
    _host = socket.gethostname().replace("_", "-")
    values.ValueClass = values.MultiProcessValue(lambda: f"{_host}-{os.getpid()}")

# Webhook answers are budgeted at p99 < 25 ms: the buckets are dense below that.
_ACK_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TASK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

WEBHOOKS = Counter(
    "postroom_webhooks_received",
    "Webhook deliveries by notification type and outcome (queued, duplicate, or the error code).",
    ["type", "outcome"],
)
WEBHOOK_ACK = Histogram(
    "postroom_webhook_ack_seconds",
    "Time from request start to the webhook answer.",
    buckets=_ACK_BUCKETS,
)
WEBHOOK_BATCH_ROWS = Histogram(
    "postroom_webhook_batch_rows",
    "Webhook rows written per INSERT (the group commit, services.events.ingest.IngestBatcher).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
JOBS = Counter(
    "postroom_jobs_published",
    "Tasks published, by the HTTP endpoint (or 'worker') that caused them and task name.",
    ["endpoint", "task"],
)
TASK_RUNS = Counter(
    "postroom_task_runs", "Task runs finished, by task and Celery state.", ["task", "state"]
)
TASK_RETRIES = Counter("postroom_task_retries", "Task retries scheduled, by task.", ["task"])
TASK_FAILURES = Counter(
    "postroom_task_failures", "Task runs that raised, by task and exception.", ["task", "exception"]
)
TASK_DURATION = Histogram(
    "postroom_task_duration_seconds", "Task run time, by task.", ["task"], buckets=_TASK_BUCKETS
)
EVENTS_COALESCED = Counter(
    "postroom_events_coalesced",
    "message.updated notifications whose work another event's did (result status `coalesced`).",
)
EVENTS_BATCHED = Counter(
    "postroom_events_batched",
    "message.created notifications done in another event's batch (services/nylas/batch.py).",
)
# Publish to start: seconds under normal load, minutes in a storm or behind a backlog.
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
TASK_WAIT = Histogram(
    "postroom_task_wait_seconds",
    "Time from publish to the start of a task run, by latency class (short, bulk, periodic).",
    ["class"],
    buckets=_WAIT_BUCKETS,
)
NYLAS_HOLDS = Counter(
    "postroom_nylas_holds",
    "Nylas 429 answers that held off a grant or the application, by scope.",
    ["scope"],
)
IMAP_PROBLEMS = Counter(
    "postroom_imap_message_problems",
    "IMAP messages stored incomplete so the folder's sync could move on, by reason.",
    ["reason"],
)

# Outbound events (services/tenant_events/deliverer.py).
WEBHOOK_DELIVERIES = Counter(
    "postroom_webhook_deliveries",
    "Delivery attempts to tenants' endpoints, by outcome (succeeded, retrying, failed).",
    ["outcome"],
)
WEBHOOK_ATTEMPT = Histogram(
    "postroom_webhook_attempt_seconds",
    "Time from claim to answer (or give-up) of one delivery attempt.",
    buckets=(*_ACK_BUCKETS, 5.0, 10.0, 15.0),
)
WEBHOOK_DISABLED = Counter(
    "postroom_webhook_endpoints_disabled",
    "Endpoints the delivery process disabled, by reason (gone: 410, failing).",
    ["reason"],
)

# The HTTP endpoint whose handler is running (set by the API middleware), so a task published
# from it is counted against it; unset in workers, where the outbox and chains publish.
ENDPOINT: ContextVar[MutableMapping[str, Any] | None] = ContextVar(
    "postroom_endpoint", default=None
)


def current_endpoint() -> str:
    scope = ENDPOINT.get()
    if scope is None:
        return "worker"
    route = scope.get("route")
    path = getattr(route, "path", None) or scope.get("path", "?")
    return f"{scope.get('method', '?')} {path}"


@dataclass
class Snapshot:
    """Values read from Redis and PostgreSQL when Prometheus scrapes; None = not readable now."""

    queue_depths: Mapping[str, int] | None = None
    unacked: int | None = None
    dead_letters: Mapping[str, int] | None = None
    events_by_status: Mapping[str, int] | None = None
    # (tenant label, class) -> (events waiting, seconds the oldest has waited), top tenants only
    waiting: Mapping[tuple[str, str], tuple[int, float]] | None = None
    webhooks: deliveries_repo.Backlog | None = None
    errors: list[str] = field(default_factory=list)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s.queue_depths is not None:
            yield _gauge(
                "postroom_queue_depth",
                "Messages waiting in a queue (a lane, e.g. short.3; all priorities).",
                "queue",
                s.queue_depths,
            )
            classes: dict[str, int] = {}
            for name, depth in s.queue_depths.items():  # lanes `short.3` -> class `short`
                cls = name.split(".", 1)[0]
                classes[cls] = classes.get(cls, 0) + depth
            yield _gauge(
                "postroom_class_queue_depth",
                "Messages waiting in a latency class (all its lanes and priorities).",
                "class",
                classes,
            )
        if s.unacked is not None:
            g = GaugeMetricFamily(
                "postroom_queue_unacked", "Messages reserved by workers but not yet acknowledged."
            )
            g.add_metric([], s.unacked)
            yield g
        if s.dead_letters is not None:
            yield _gauge(
                "postroom_dead_letters",
                "Dead letters, by whether they were replayed.",
                "state",
                s.dead_letters,
            )
        if s.events_by_status is not None:
            yield _gauge("postroom_events", "Event rows by status.", "status", s.events_by_status)
        if s.waiting is not None:
            yield from _waiting_gauges(s.waiting)
        if s.webhooks is not None:
            yield from _webhook_gauges(s.webhooks)
        up = GaugeMetricFamily(
            "postroom_scrape_source_up",
            "1 when a scrape-time source answered, else 0.",
            labels=["source"],
        )
        for source in ("redis", "database"):
            up.add_metric([source], 0 if source in s.errors else 1)
        yield up


def _webhook_gauges(backlog: deliveries_repo.Backlog) -> Iterator[Metric]:
    total = GaugeMetricFamily(
        "postroom_webhook_backlog", "Deliveries to tenants' endpoints not yet succeeded or failed."
    )
    total.add_metric([], backlog.open)
    yield total
    oldest = GaugeMetricFamily(
        "postroom_webhook_oldest_pending_seconds",
        "Age of the oldest delivery not yet succeeded or failed.",
    )
    oldest.add_metric([], backlog.oldest_s)
    yield oldest
    per = GaugeMetricFamily(
        "postroom_webhook_endpoint_backlog",
        "Open deliveries of the endpoints with the most (the top POSTROOM_METRICS_TOP_TENANTS).",
        labels=["endpoint"],
    )
    for e in backlog.worst:
        per.add_metric([str(e.endpoint_id)], e.open)
    yield per


def _waiting_gauges(
    waiting: Mapping[tuple[str, str], tuple[int, float]],
) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "postroom_tenant_queue_depth",
        "Events waiting for a worker, by tenant (the top POSTROOM_METRICS_TOP_TENANTS by "
        "depth; the rest summed as 'other', not yet known as 'unknown') and latency class.",
        labels=["tenant", "class"],
    )
    oldest = GaugeMetricFamily(
        "postroom_tenant_oldest_wait_seconds",
        "How long the oldest waiting event has waited, by tenant (as above) and class.",
        labels=["tenant", "class"],
    )
    by_class: dict[str, float] = {}
    for (tenant, cls), (n, age) in sorted(waiting.items()):
        depth.add_metric([tenant, cls], n)
        oldest.add_metric([tenant, cls], age)
        by_class[cls] = max(by_class.get(cls, 0.0), age)
    yield depth
    yield oldest
    g = GaugeMetricFamily(
        "postroom_class_oldest_wait_seconds",
        "How long the oldest event waiting for a worker has waited, by latency class.",
        labels=["class"],
    )
    for cls, age in sorted(by_class.items()):
        g.add_metric([cls], age)
    yield g


def top_tenants(
    rows: Iterable[tuple[str, str, int, float]],
    *,
    top: int,
    class_of: Callable[[str], str],
) -> dict[tuple[str, str], tuple[int, float]]:
    """Waiting work by (tenant label, class): the `top` tenants by depth keep their id.

    Label values are what Prometheus pays for: one series per tenant would grow with the
    customer list. The deepest `top` tenants are the ones an operator looks for; everyone
    else is summed into 'other' (depth added, the oldest wait kept), so the series count is
    at most (top + 2) x classes whatever the number of tenants. `class_of` names a task's
    latency class (the worker's routing table, which services do not import).
    """
    per: dict[tuple[str, str], tuple[int, float]] = {}
    totals: dict[str, int] = {}
    for tenant, task, n, age in rows:
        try:
            cls = class_of(task)
        except KeyError:
            cls = "unknown"
        name = tenant or "unknown"
        old = per.get((name, cls), (0, 0.0))
        per[(name, cls)] = (old[0] + n, max(old[1], age))
        totals[name] = totals.get(name, 0) + n
    keep = {t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]}
    keep.add("unknown")
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for (name, cls), (n, age) in per.items():
        key = (name if name in keep else "other", cls)
        old = out.get(key, (0, 0.0))
        out[key] = (old[0] + n, max(old[1], age))
    return out


def _gauge(name: str, doc: str, label: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        g.add_metric([key], value)
    return g


class _ProcessCollector(Collector):
    """This process's own registry, when there is no multiprocess directory to read."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(snapshot: Snapshot) -> bytes:
    """The text Prometheus scrapes: every process's counters plus the scrape-time gauges."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and os.path.isdir(directory):
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ProcessCollector())
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


def queue_keys(queue: str, priority_steps: Sequence[int], sep: str = ":") -> list[str]:
    """kombu's Redis lists for one queue: `q` for step 0, then `q:1` ... `q:9`."""
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in priority_steps]


async def queue_depths(
    redis: Any, queues: Sequence[str], priority_steps: Sequence[int]
) -> dict[str, int]:
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        for key in queue_keys(q, priority_steps):
            pipe.llen(key)
    pipe.hlen("unacked")  # kombu's hash of reserved, not yet acknowledged messages
    counts = await pipe.execute()
    out: dict[str, int] = {}
    per_queue = len(priority_steps)
    for i, q in enumerate(queues):
        out[q] = int(sum(counts[i * per_queue : (i + 1) * per_queue]))
    out["_unacked"] = int(counts[-1])
    return out


async def snapshot(
    *,
    db: Database,
    redis: Any,
    queues: Sequence[str],
    priority_steps: Sequence[int],
    class_of: Callable[[str], str],
    timeout_s: float = 1.0,
    top: int = 10,
) -> Snapshot:
    """Read queue depths and event / dead-letter counts, each source bounded by `timeout_s`."""
    snap = Snapshot()

    async def read_redis() -> None:
        depths = await asyncio.wait_for(queue_depths(redis, queues, priority_steps), timeout_s)
        snap.unacked = depths.pop("_unacked")
        snap.queue_depths = depths

    async def read_database() -> None:
        async def counts() -> None:
            async with db.transaction() as session:
                snap.events_by_status = await stats.events_by_status(
                    session, timeout_ms=int(timeout_s * 1000)
                )
                snap.dead_letters = await stats.dead_letter_counts(
                    session, timeout_ms=int(timeout_s * 1000)
                )
                # Same transaction: the statement timeout set above still holds.
                rows = await stats.waiting_work(session, timeout_ms=None)
                snap.waiting = top_tenants(rows, top=top, class_of=class_of)
                snap.webhooks = await deliveries_repo.backlog(session, top=top)

        await asyncio.wait_for(counts(), timeout_s)

    results = await asyncio.gather(read_redis(), read_database(), return_exceptions=True)
    for source, result in zip(("redis", "database"), results, strict=True):
        if isinstance(result, BaseException):
            snap.errors.append(source)
    return snap


T = TypeVar("T")


class Cached(Generic[T]):
    """A value loaded at most once per `max_age_s`, by one load at a time.

    Callers that arrive while a load runs wait for that load instead of starting their own,
    so twenty parallel scrapes cost one set of queries, and a slow or down database costs one
    timeout per period, not one per scrape. A failed load is kept like a good one (the
    Snapshot records which source failed) for the same reason.
    """

    def __init__(self, load: Callable[[], Awaitable[T]], *, max_age_s: float) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._value: T | None = None
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task[T] | None = None
        self.loads = 0

    async def get(self) -> T:
        if self._value is not None and time.monotonic() - self._loaded_at < self._max_age_s:
            return self._value
        if self._loading is None:
            self._loading = asyncio.create_task(self._refresh())
        # shield: a scrape that gives up (client gone) must not cancel the load others await.
        return await asyncio.shield(self._loading)

    async def _refresh(self) -> T:
        try:
            self.loads += 1
            value = await self._load()
            self._value, self._loaded_at = value, time.monotonic()
            return value
        finally:
            self._loading = None
