"""The OpenAPI document as clients see it: every /v1 operation lists the error envelope for
the statuses any request can get (401, 400, 413, 422, 429, 503), so generated clients and
schemathesis know them; and the Allow header of a 405 is derived from the same document.

/docs (Swagger UI) and /redoc (ReDoc) load their scripts, styles and icon from this server:
the files of the installed `fastapi-offline` package, mounted at /docs-assets. FastAPI's
defaults fetch them from a CDN, which leaves blank pages offline or behind a CSP that allows
only the API's own origin."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.schemas.common import ErrorBody

_COMMON = {
    "400": "Malformed request: bad JSON, a cursor from another query, NUL characters",
    "401": "Missing, invalid or revoked API key",
    "422": "Validation failed (details in error.details)",
    "429": "Over the API key's request budget (or the tenant's send budget); see Retry-After",
    "503": "Database unavailable; retry later",
}
_WITH_BODY = {"413": "Body over the limit"}
_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _document_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, sub in (
        ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        .get("$defs", {})
        .items()
    ):
        components.setdefault(name, sub)
    body_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    body_schema.pop("$defs", None)
    components["ErrorBody"] = body_schema
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            wanted = dict(_COMMON, **(_WITH_BODY if "requestBody" in operation else {}))
            for status, text in wanted.items():
                entry = responses.setdefault(status, {"description": text})
                # FastAPI's default 422 schema is not our envelope: replace it.
                entry["content"] = {"application/json": {"schema": _REF}}


def install_openapi(app: FastAPI) -> None:
    """Wrap app.openapi so the document is post-processed once, then cached by FastAPI."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            _document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """/docs and /redoc with local assets (create the app with docs_url=redoc_url=None)."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="docs-assets",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=None,  # API keys are Bearer tokens: no OAuth2 flow to finish
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


@lru_cache(maxsize=8)
def _templates(
    app_id: int, paths: tuple[tuple[str, tuple[str, ...]], ...]
) -> list[tuple[re.Pattern[str], tuple[str, ...]]]:
    out = []
    for template, methods in paths:
        regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        out.append((re.compile(regex), methods))
    return out


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document declares for this concrete path."""
    schema = app.openapi()
    paths = tuple(
        (
            p,
            tuple(
                m.upper()
                for m in item
                if m in {"get", "put", "post", "patch", "delete", "head", "options"}
            ),
        )
        for p, item in schema.get("paths", {}).items()
    )
    literal: set[str] = set()
    templated: set[str] = set()
    for (template, _), (regex, methods) in zip(paths, _templates(id(app), paths), strict=True):
        if regex.match(path):
            (templated if "{" in template else literal).update(methods)
    # A literal path (/v1/messages/send) wins over a template that also matches it.
    return sorted(literal or templated)
