"""Liveness, readiness and the detailed view (API.md "Operations")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import State

from api.auth import OpsTokenDep
from services.metrics import Cached

router = APIRouter(prefix="/health", tags=["operations"])


async def _timed(check: Any, limit_s: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit_s)
        return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


async def check_database(state: State, limit_s: float = 1.0) -> dict[str, Any]:
    async def ping() -> None:
        async with state.db.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    return await _timed(ping, limit_s)


async def check_broker(state: State, limit_s: float = 1.0) -> dict[str, Any]:
    async def ping() -> None:
        await state.redis.ping()

    return await _timed(ping, limit_s)


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    db, broker = await asyncio.gather(check_database(state), check_broker(state))
    ok = db["ok"] and broker["ok"]
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": {"database": db, "broker": broker}},
        status_code=200 if ok else 503,
    )


async def ping_workers(state: State, wait_s: float = 1.0) -> dict[str, Any]:
    """Celery workers that answer a broadcast ping within `wait_s` seconds."""
    celery = state.celery
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


def _checks(state: State) -> Cached[tuple[dict[str, Any], ...]]:
    """The detailed view's checks, one run at a time per process and reused for a few seconds:
    each run holds a pooled connection and a thread for the 1 s worker ping, which a burst of
    parallel calls must not multiply."""
    cache = getattr(state, "detailed_checks", None)
    if cache is None:

        async def load() -> tuple[dict[str, Any], ...]:
            return tuple(
                await asyncio.gather(
                    check_database(state), check_broker(state), ping_workers(state)
                )
            )

        cache = state.detailed_checks = Cached(load, max_age_s=state.settings.metrics_cache_s)
    return cache  # type: ignore[no-any-return]


@router.get("/detailed", dependencies=[OpsTokenDep])
async def detailed(request: Request) -> JSONResponse:
    """Database, broker, workers (ping, 1 s), queue depths and dead letters; 503 if any is down.

    Figures are at most POSTROOM_METRICS_CACHE_S old (shared with /metrics)."""
    from api.routes.metrics import read_snapshot

    (db, broker, workers), snap = await asyncio.gather(
        _checks(request.app.state).get(), read_snapshot(request)
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
