"""The FastAPI application factory and its lifespan (engine and clients once per process)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from api.errors import install_error_handlers
from api.event_catalog import install_event_catalog
from api.limits import BodyLimitMiddleware
from api.middleware import RequestIdMiddleware, nosniff
from api.observability import WEBHOOK_PATH, ObservabilityMiddleware
from api.openapi import install_docs, install_openapi
from api.routes import (
    accounts,
    classify_rules,
    events,
    feed,
    health,
    jobs,
    messages,
    metrics,
    tasks,
    webhooks,
)
from api.routes import dead_letters as dead_letter_routes
from api.routes import oauth as oauth_routes
from api.routes import suppressions as suppression_routes
from api.routes import templates as template_routes
from api.routes import threads as thread_routes
from api.routes import unsubscribe as unsubscribe_routes
from api.routes import webhook_endpoints as webhook_endpoint_routes
from api.webhook_path import is_webhook, serve_webhook
from database.engine import Database, driver_pool
from services.events.ingest import IngestBatcher
from services.logs import configure_logging
from services.nylas.budget import NylasBudget
from services.nylas.gateway import NylasGateway
from settings import Settings, get_settings
from worker.dispatch import AsyncPublisher


class PostroomAPI(FastAPI):
    """FastAPI, except that POST /webhooks/nylas is answered before any of it runs.

    The webhook is the busiest route by far: api/webhook_path.py serves it with its own
    request id, log line, metrics, body cap and error envelope, without the walk through
    FastAPI's telemetry check, Starlette's middleware stack and the router.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Outermost, so that every answer has it: errors, 500s from Starlette's
            # ServerErrorMiddleware (which sits outside any middleware we add) and the webhook.
            send = nosniff(send)
        if is_webhook(scope):
            scope["app"] = self
            await serve_webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from worker.config import make_celery

        # No pre-ping on the API's pool: it costs a round trip per request on the ingest path;
        # a connection broken by a database restart fails one request with 503 and is dropped.
        # No overflow either: under load, overflow connections were opened and closed for
        # every burst (a TCP + TLS handshake each); requests now queue for a pooled one.
        app.state.db = Database.from_settings(settings, pre_ping=False, max_overflow=0)
        # The webhook's INSERT runs on plain asyncpg connections of its own (api/webhook_path.py);
        # none is opened until the first webhook, so the API starts while PostgreSQL is down.
        app.state.ingest_pool = await driver_pool(settings, max_size=settings.webhook_db_pool_size)
        app.state.celery = make_celery(settings, publisher_only=True)
        # For checking a Nylas grant before an account may use it (services.accounts.admin).
        app.state.nylas = (
            NylasGateway(
                api_key=settings.nylas_api_key.get_secret_value(),
                api_uri=settings.nylas_api_uri,
                timeout=settings.nylas_timeout_s,
                budget=NylasBudget.from_settings(settings),
            )
            if settings.nylas_api_key is not None
            else None
        )
        app.state.publisher = AsyncPublisher(
            app.state.celery, settings.redis_url, timeout=settings.publish_timeout_s
        )
        # Group commit: concurrent webhooks share one INSERT, and their task messages one
        # script call after it committed (services/events/ingest.py, IngestBatcher).
        app.state.ingest_batcher = IngestBatcher(
            app.state.ingest_pool,
            max_batch=settings.webhook_batch_max,
            statements=settings.webhook_batch_statements,
            deadline_s=settings.webhook_db_deadline_s,
            publish=partial(app.state.publisher.publish_many, endpoint=f"POST {WEBHOOK_PATH}"),
        )
        app.state.redis = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        # Everything made so far lives as long as the process: keep it out of the cyclic
        # collector's full passes, which otherwise walk it again and again under load.
        gc.freeze()
        try:
            yield
        finally:
            await app.state.ingest_batcher.close()
            await app.state.publisher.close()
            await app.state.redis.aclose()
            if app.state.nylas is not None and app.state.nylas.budget is not None:
                await app.state.nylas.budget.redis.aclose()
            await app.state.ingest_pool.close()
            await app.state.db.dispose()

    configure_logging(level=settings.log_level, json=settings.log_json)
    app = PostroomAPI(
        title="postroom",
        version="1.0.0",
        description="Mail-processing backend: Nylas webhooks in, IMAP/SMTP/Nylas work on Celery.",
        lifespan=lifespan,
        docs_url=None,  # install_docs: the same pages with assets served from here
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(ObservabilityMiddleware)  # inside RequestIdMiddleware: logs carry the id
    app.add_middleware(RequestIdMiddleware)
    # POST /webhooks/nylas never reaches this stack: PostroomAPI answers it first.
    install_error_handlers(app)
    install_openapi(app)
    install_event_catalog(app)
    install_docs(app)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(dead_letter_routes.router)
    for v1 in (accounts, jobs, messages, events, tasks, feed):
        app.include_router(v1.router)
    app.include_router(classify_rules.router)
    app.include_router(thread_routes.router)
    app.include_router(template_routes.router)
    app.include_router(oauth_routes.router)
    app.include_router(oauth_routes.callback_router)
    app.include_router(suppression_routes.router)
    app.include_router(unsubscribe_routes.router)
    app.include_router(webhook_endpoint_routes.router)
    return app
