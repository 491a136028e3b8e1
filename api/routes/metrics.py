"""GET /metrics: Prometheus text for every process on this host plus cached gauges."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.auth import OpsTokenDep
from services import metrics
from worker.config import PRIORITY_STEPS, all_queues, route_queue

router = APIRouter(tags=["operations"])

QUEUES = all_queues()


def gauges(request: Request, timeout_s: float = 1.0) -> metrics.Cached[metrics.Snapshot]:
    """This process's one cache of the Redis and PostgreSQL gauges, made on first use."""
    state = request.app.state
    cache = getattr(state, "gauges", None)
    if cache is None:
        db, redis = state.db, state.redis

        async def load() -> metrics.Snapshot:
            return await metrics.snapshot(
                db=db,
                redis=redis,
                queues=QUEUES,
                priority_steps=PRIORITY_STEPS,
                class_of=class_of,
                timeout_s=timeout_s,
                top=state.settings.metrics_top_tenants,
            )

        cache = state.gauges = metrics.Cached(load, max_age_s=state.settings.metrics_cache_s)
    return cache  # type: ignore[no-any-return]


def class_of(task_name: str) -> str:
    """A task's latency class, from the worker's routing table (KeyError if unknown)."""
    return route_queue(task_name, {}).value


async def read_snapshot(request: Request) -> metrics.Snapshot:
    return await gauges(request).get()


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    dependencies=[OpsTokenDep],
)
async def prometheus_metrics(request: Request) -> Response:
    """Counters of all API and worker processes sharing PROMETHEUS_MULTIPROC_DIR, plus queue
    depths, events by status and dead letters at most POSTROOM_METRICS_CACHE_S old (one
    refresh per process at a time, each source bounded to 1 s)."""
    snap = await read_snapshot(request)
    return Response(metrics.exposition(snap), media_type=metrics.CONTENT_TYPE_LATEST)
