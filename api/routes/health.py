"""Liveness, readiness and the detailed view (API.md "Operations")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/health", tags=["operations"])


async def _timed(check: Any, limit_s: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit_s)
        return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


async def check_database(request: Request, limit_s: float = 1.0) -> dict[str, Any]:
    async def ping() -> None:
        async with request.app.state.db.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    return await _timed(ping, limit_s)


async def check_broker(request: Request, limit_s: float = 1.0) -> dict[str, Any]:
    async def ping() -> None:
        await request.app.state.redis.ping()

    return await _timed(ping, limit_s)


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    db, broker = await asyncio.gather(check_database(request), check_broker(request))
    ok = db["ok"] and broker["ok"]
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": {"database": db, "broker": broker}},
        status_code=200 if ok else 503,
    )


async def ping_workers(request: Request, wait_s: float = 1.0) -> dict[str, Any]:
    """Celery workers that answer a broadcast ping within `wait_s` seconds."""
    celery = request.app.state.celery
    start = time.perf_counter()
    try:
        # control.ping blocks on the broker: keep it off the event loop.
        replies = await asyncio.wait_for(
            asyncio.to_thread(celery.control.ping, timeout=wait_s), wait_s + 1.0
        )
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "workers": []}
    names = sorted(name for reply in replies or [] for name in reply)
    return {
        "ok": bool(names),
        "workers": names,
        "latency_ms": round((time.perf_counter() - start) * 1000, 2),
    }


@router.get("/detailed")
async def detailed(request: Request) -> JSONResponse:
    """Database, broker, workers (ping, 1 s), queue depths and dead letters; 503 if any is down."""
    from api.routes.metrics import read_snapshot

    db, broker, workers, snap = await asyncio.gather(
        check_database(request),
        check_broker(request),
        ping_workers(request),
        read_snapshot(request),
    )
    ok = db["ok"] and broker["ok"] and workers["ok"]
    body = {
        "status": "ok" if ok else "degraded",
        "checks": {"database": db, "broker": broker, "workers": workers},
        "queues": dict(snap.queue_depths) if snap.queue_depths is not None else None,
        "unacked": snap.unacked,
        "dead_letters": dict(snap.dead_letters) if snap.dead_letters is not None else None,
        "events": dict(snap.events_by_status) if snap.events_by_status is not None else None,
    }
    return JSONResponse(body, status_code=200 if ok else 503)
