"""One log line per HTTP request and the webhook metrics, as a pure ASGI middleware.

It sits inside RequestIdMiddleware, so its log line carries the request's `request_id`.
The webhook route leaves the verified notification's type and its outcome in the request
state; only an error answer (small) is read back for its code. The body is never parsed twice.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import metrics

log = structlog.get_logger("postroom.http")

WEBHOOK_PATH = "/webhooks/nylas"
_QUIET = ("/health/", "/metrics")
_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+){1,3}$")


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        is_webhook = scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH
        response_chunks: list[bytes] = []
        status = 500
        acked_at: float | None = None

        async def send_capture(message: Message) -> None:
            nonlocal status, acked_at
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                if is_webhook and status != 200:
                    response_chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    acked_at = time.perf_counter()
            await send(message)

        token = metrics.ENDPOINT.set(scope)
        try:
            await self.app(scope, receive, send_capture)
        finally:
            metrics.ENDPOINT.reset(token)
            elapsed = (acked_at or time.perf_counter()) - start
            if is_webhook:
                _count_webhook(scope, status, elapsed, b"".join(response_chunks))
            # Path only: a query string may carry a token; headers are never logged.
            quiet = scope["path"].startswith(_QUIET) and status < 500
            (log.debug if quiet else log.info)(
                "http_request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )


def _count_webhook(scope: Scope, status: int, elapsed: float, answer: bytes) -> None:
    state = scope.get("state") or {}
    outcome = state.get("webhook_outcome") if status == 200 else None
    outcome = outcome or _outcome(status, answer)
    type_ = _label(state.get("webhook_type")) if status == 200 else "unverified"
    metrics.WEBHOOKS.labels(type=type_, outcome=outcome).inc()
    metrics.WEBHOOK_ACK.observe(elapsed)


def _outcome(status: int, answer: bytes) -> str:
    """'queued' / 'duplicate' from a 200, else the error envelope's code, else the status."""
    try:
        data: Any = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return str(status)
    if isinstance(data, dict):
        value = data.get("status") if status == 200 else (data.get("error") or {}).get("code")
        if isinstance(value, str) and len(value) <= 40:
            return value
    return str(status)


def _label(value: object) -> str:
    """Bounded label values: anything not shaped like a Nylas type is folded into 'other'."""
    if not isinstance(value, str):
        return "unknown"
    return value if len(value) <= 64 and _TYPE.match(value) else "other"
