"""GET /metrics: Prometheus text for every process on this host plus scrape-time gauges."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services import metrics
from worker.config import PRIORITY_STEPS, Queue

router = APIRouter(tags=["operations"])

QUEUES = [q.value for q in Queue]


async def read_snapshot(request: Request, timeout_s: float = 1.0) -> metrics.Snapshot:
    return await metrics.snapshot(
        db=request.app.state.db,
        redis=request.app.state.redis,
        queues=QUEUES,
        priority_steps=PRIORITY_STEPS,
        timeout_s=timeout_s,
    )


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def prometheus_metrics(request: Request) -> Response:
    """Counters of all API and worker processes sharing PROMETHEUS_MULTIPROC_DIR, plus queue
    depths, events by status and dead letters read now (each source bounded to 1 s)."""
    snap = await read_snapshot(request)
    return Response(metrics.exposition(snap), media_type=metrics.CONTENT_TYPE_LATEST)
