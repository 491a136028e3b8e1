"""The lean path for POST /webhooks/nylas: the busiest route, served ahead of FastAPI.

The app (api.app.PostroomAPI) hands such a request to `serve_webhook` before anything of
FastAPI or Starlette runs: no routing, no middleware stack, no telemetry check.

Every notification Nylas sends lands here, so the route's per-request cost is what caps
ingest. Through FastAPI it paid for routing, dependency resolution and response validation
on top of the handler: about twice the CPU of a bare Starlette app doing the same work
(docs/benchmarks.md "Webhook ingest"). This ASGI app does only the handler's work, and keeps
what the general stack gives every request:

- the request id (RequestIdMiddleware: X-Request-ID in and out, bound for log lines),
- the access log line and the webhook metrics (ObservabilityMiddleware),
- the body cap (POSTROOM_WEBHOOK_MAX_BODY_BYTES, refused before the body is read whole),
- the error envelope, produced by the very exception handlers api.errors installs.

It is the only handler of the route: one secret check, one body cap, one signature check
(services/events/ingest.py). /openapi.json describes it through api/schemas/webhooks.py
(api/openapi.py adds it); there is no FastAPI route for it (an earlier one only ever ran in
tests).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import is_database_unavailable
from api.middleware import RequestIdMiddleware
from api.observability import WEBHOOK_PATH, ObservabilityMiddleware
from services.errors import BadRequest, PayloadTooLarge, ServiceUnavailable
from services.events.ingest import IngestBatcher, Ingested, ingest_nylas
from services.events.unit_of_work import Job
from settings import Settings

log = structlog.get_logger(__name__)
_JSON = [(b"content-type", b"application/json")]


def is_webhook(scope: Scope) -> bool:
    """POST /webhooks/nylas: the request the lean path answers."""
    return scope["type"] == "http" and scope["path"] == WEBHOOK_PATH and scope["method"] == "POST"


async def _read_capped(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The raw body, or None when the client went away; over `limit`: 413 before reading on."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise BadRequest("Content-Length is not a number.")
            if int(value) > limit:
                raise PayloadTooLarge(f"The body is over {limit} bytes.")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


async def store_notification(
    store: IngestBatcher | asyncpg.Pool,
    settings: Settings,
    secret: str,
    *,
    raw: bytes,
    signature: str | None,
    content_encoding: str | None,
    request_id: str,
) -> Ingested:
    """Verify and store one notification within POSTROOM_WEBHOOK_DB_DEADLINE_S, else 503.

    The row goes into the next group commit (`store`, the app's IngestBatcher): one
    INSERT ... ON CONFLICT statement on the driver pool (autocommit) for the rows of the
    webhooks waiting together, committed when it returns; the batch publishes its new rows.
    If the deadline cuts it short after the commit, Nylas's retry of the 503 is answered
    `duplicate` and the outbox sweeper publishes the stored event: nothing is lost. A
    connection-level error (PostgreSQL restarted or went away) retires every pooled
    connection, as SQLAlchemy's pool does, so the requests of that batch answer 503 and the
    next ones get fresh connections.
    """
    try:
        async with asyncio.timeout(settings.webhook_db_deadline_s):
            return await ingest_nylas(
                store,
                raw=raw,
                signature=signature,
                content_encoding=content_encoding,
                secret=secret,
                max_bytes=settings.webhook_max_body_bytes,
                stale_after_s=settings.outbox_stale_after_s,
                max_age_s=settings.webhook_max_age_s,
                request_id=request_id,
            )
    except TimeoutError:
        log.warning("webhook_db_deadline", deadline_s=settings.webhook_db_deadline_s)
        raise ServiceUnavailable("The database did not answer in time; retry later.") from None
    except Exception as exc:
        if is_database_unavailable(exc):
            await (store.pool if isinstance(store, IngestBatcher) else store).expire_connections()
        raise


async def _handle(scope: Scope, receive: Receive, send: Send) -> None:
    state = scope["app"].state
    try:
        answer = await _ingest(scope, receive, state)
    except Exception as exc:
        # The same answer the FastAPI route would give: api.errors' handler for the class.
        handlers = scope["app"].exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:
            raise
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)
        return
    if answer is None:
        return
    body, job, ingested = answer
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    if job is not None:
        # Only for a row the batch did not publish itself (the app's IngestBatcher publishes
        # its new rows together). After the answer: the event is committed, so a publish that
        # fails or never happens (the process dies here) is the outbox sweeper's.
        await state.publisher.publish(**job.fields())
    # The call ends once the batch's publish has (the answer is out already): a caller that
    # awaits the app, a test client, sees the task message queued, as before the batches.
    await ingested.published_by_batch()


async def _ingest(
    scope: Scope, receive: Receive, state: Any
) -> tuple[bytes, Job | None, Ingested] | None:
    """The secret (before the body is read), the body cap, then verify and store."""
    settings = state.settings
    if settings.nylas_webhook_secret is None:
        log.error("webhook_secret_missing", hint="set POSTROOM_NYLAS_WEBHOOK_SECRET")
        raise ServiceUnavailable("Webhooks are not configured on this server yet.")
    raw = await _read_capped(scope, receive, settings.webhook_max_body_bytes)
    if raw is None:
        return None
    ingested = await store_notification(
        state.ingest_batcher,
        settings,
        settings.nylas_webhook_secret.get_secret_value(),
        raw=raw,
        signature=_header(scope, b"x-nylas-signature"),
        content_encoding=_header(scope, b"content-encoding"),
        request_id=scope["state"]["request_id"],
    )
    status = "queued" if ingested.created else "duplicate"
    # For the metrics, which count webhooks by type and outcome.
    scope["state"]["webhook_type"], scope["state"]["webhook_outcome"] = ingested.type, status
    event_id = str(ingested.event_id) if ingested.event_id else None
    # Committed: the batch's INSERT returned. Its job, if the batch left one, is published
    # once the answer is out.
    return orjson.dumps({"status": status, "event_id": event_id}), ingested.job, ingested


# Request id outermost, so the access log line carries it; scope["app"] must be the app.
serve_webhook: ASGIApp = RequestIdMiddleware(ObservabilityMiddleware(_handle))
