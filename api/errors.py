"""One mapping from exceptions to the error envelope of API.md."""

from __future__ import annotations

import math
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.openapi import allowed_methods
from services.errors import PostroomError, database_gone

log = structlog.get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def is_database_unavailable(exc: BaseException) -> bool:
    """Connection-level trouble (down, restarting, pool exhausted), not a bad statement."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated or database_gone(exc.orig)
    ):
        return True  # database_gone: e.g. 57P03 "not yet accepting connections" while restarting
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    # The driver's own errors, unwrapped (the webhook's driver pool, database.engine):
    # connection trouble, a restart in progress, or no connection slot left on the server.
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError)) or (
        isinstance(exc, asyncpg.PostgresError) and database_gone(exc)
    ):
        return True
    name = type(exc).__name__
    return name in {
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "AdminShutdownError",
        "TooManyConnectionsError",
    }


def is_unstorable_text(exc: BaseException) -> bool:
    """Input the database refuses (lone surrogates, out-of-range numbers): 422, not 500."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        # asyncpg's DataError family (SQLSTATE class 22): out-of-range numbers, bad encodings.
        if isinstance(seen, UnicodeEncodeError) or any(
            c.__module__.startswith("asyncpg") and c.__name__ == "DataError"
            for c in type(seen).__mro__
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PostroomError)
    async def _domain(request: Request, exc: PostroomError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status_code == 503 else None
        if exc.retry_after is not None:
            # Whole seconds, at least 1: a client that waits exactly this long gets through.
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        # An error may carry details (account verification: one entry per server); every 422
        # has the key, as validation errors do.
        details = getattr(exc, "details", None)
        if details is None and exc.status_code == 422:
            details = []
        extra: dict[str, Any] = {"details": details} if details is not None else {}
        return JSONResponse(
            error_body(exc.code, exc.message, **extra),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        body_error = any(d["type"] == "json_invalid" for d in details)
        if body_error:
            return JSONResponse(
                error_body("bad_request", "The body is not valid JSON."), status_code=400
            )
        return JSONResponse(
            error_body("validation_error", "The request is not valid.", details=details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = "No such route."
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette's Allow names one route's methods; a path served by several routes
            # must list them all.
            allow = allowed_methods(request.app, request.url.path)
            headers = {**(headers or {}), **({"Allow": ", ".join(allow)} if allow else {})}
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        if is_unstorable_text(exc):
            return JSONResponse(
                error_body(
                    "validation_error", "The request holds data that cannot be stored.", details=[]
                ),
                status_code=422,
            )
        if is_database_unavailable(exc):
            log.warning("database_unavailable", error=type(exc).__name__, request_id=rid)
            return JSONResponse(
                error_body("service_unavailable", "The database is unavailable; retry later."),
                status_code=503,
                headers={"Retry-After": "5"},
            )
        log.exception("unhandled_error", request_id=rid, path=request.url.path)
        return JSONResponse(
            error_body("internal_error", "An unexpected error occurred.", request_id=rid),
            status_code=500,
        )

    # Also registered for the connection-level classes: Starlette answers through a catch-all
    # `Exception` handler and then re-raises, so uvicorn closes the keep-alive connection and
    # the client's next request on it fails with a reset instead of its 503 (fault test 4).
    for cls in (
        sa_exc.DBAPIError,
        sa_exc.TimeoutError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ):
        app.add_exception_handler(cls, _unexpected)
