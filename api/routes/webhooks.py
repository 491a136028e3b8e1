"""Nylas webhooks: challenge echo and signed notifications (API.md "Webhooks")."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from api.deps import IngestDep, PublisherDep, SettingsDep
from api.errors import is_database_unavailable
from services.errors import BadRequest, PayloadTooLarge, ServiceUnavailable
from services.events.ingest import IngestBatcher, Ingested, ingest_nylas
from settings import Settings

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
log = structlog.get_logger(__name__)


class WebhookAck(BaseModel):
    status: str
    event_id: str | None


@router.get("/nylas", response_class=PlainTextResponse, summary="Nylas endpoint verification")
async def nylas_challenge(challenge: str | None = Query(default=None)) -> PlainTextResponse:
    """Echo `challenge` as plain text, as Nylas expects when the webhook is created."""
    if challenge is None:
        raise BadRequest("The 'challenge' query parameter is required.")
    return PlainTextResponse(challenge)


async def read_capped(request: Request, limit: int) -> bytes:
    """The raw body, refusing anything over `limit` bytes before reading all of it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"The body is over {limit} bytes.")
        except ValueError:
            raise BadRequest("Content-Length is not a number.") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def store_notification(
    store: IngestBatcher | asyncpg.Pool,
    settings: Settings,
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
    secret = settings.nylas_webhook_secret
    if secret is None:
        log.error("webhook_secret_missing", hint="set POSTROOM_NYLAS_WEBHOOK_SECRET")
        raise ServiceUnavailable("Webhooks are not configured on this server yet.")
    try:
        async with asyncio.timeout(settings.webhook_db_deadline_s):
            return await ingest_nylas(
                store,
                raw=raw,
                signature=signature,
                content_encoding=content_encoding,
                secret=secret.get_secret_value(),
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


@router.post(
    "/nylas",
    response_model=WebhookAck,
    summary="Receive a Nylas notification",
    responses={
        400: {"description": "malformed body, or a `time` outside the accepted window"},
        401: {"description": "missing or wrong X-Nylas-Signature"},
        413: {"description": "body over the limit"},
        503: {"description": "database unavailable or webhook secret not configured"},
    },
)
async def nylas_notification(
    request: Request, settings: SettingsDep, store: IngestDep, publisher: PublisherDep
) -> WebhookAck:
    """Verify, store once, publish `postroom.events.process`; never waits for the work.

    The store is one INSERT ... ON CONFLICT statement, so it runs on an autocommit
    connection: committed when it returns, with no BEGIN/COMMIT round trips. (The app answers
    this route on its lean path, api/webhook_path.py; this one describes it in OpenAPI.)
    """
    if settings.nylas_webhook_secret is None:
        log.error("webhook_secret_missing", hint="set POSTROOM_NYLAS_WEBHOOK_SECRET")
        raise ServiceUnavailable("Webhooks are not configured on this server yet.")
    raw = await read_capped(request, settings.webhook_max_body_bytes)
    ingested = await store_notification(
        store,
        settings,
        raw=raw,
        signature=request.headers.get("x-nylas-signature"),
        content_encoding=request.headers.get("content-encoding"),
        request_id=request.state.request_id,
    )
    if ingested.job is not None:  # committed (the batch publishes its own; this is none)
        await publisher.publish(**ingested.job.fields())
    await ingested.published_by_batch()
    status = "queued" if ingested.created else "duplicate"
    # For the metrics middleware, which counts webhooks by type and outcome.
    request.state.webhook_type, request.state.webhook_outcome = ingested.type, status
    return WebhookAck(status=status, event_id=str(ingested.event_id) if ingested.event_id else None)
