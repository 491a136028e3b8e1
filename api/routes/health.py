"""Liveness and readiness (API.md "Operations")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/health", tags=["operations"])


async def _timed(check: Any, timeout: float) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout)
        return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}


async def check_database(request: Request, timeout: float = 1.0) -> dict[str, Any]:
    async def ping() -> None:
        async with request.app.state.db.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    return await _timed(ping, timeout)


async def check_broker(request: Request, timeout: float = 1.0) -> dict[str, Any]:
    async def ping() -> None:
        await request.app.state.redis.ping()

    return await _timed(ping, timeout)


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
