"""The OpenAPI document as clients see it: every /v1 operation lists the error envelope for
the statuses any request can get (401, 400, 413, 422, 429, 503), so generated clients and
schemathesis know them; and the Allow header of a 405 is derived from the same document.

/docs (Swagger UI) and /redoc (ReDoc) load their scripts, styles and icon from this server:
the files of the installed `fastapi-offline` package, mounted at /docs-assets. FastAPI's
defaults fetch them from a CDN and start Swagger UI with an inline script, which leaves blank
pages offline or behind a CSP that allows only the API's own origin."""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, swagger_ui_default_parameters
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from api.observability import WEBHOOK_PATH
from api.schemas.common import ErrorBody
from api.schemas.webhooks import OPENAPI_POST

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
            # POST /webhooks/nylas is answered ahead of FastAPI (api/webhook_path.py), so no
            # route of FastAPI's describes it.
            schema.setdefault("paths", {}).setdefault(WEBHOOK_PATH, {})["post"] = OPENAPI_POST
            _document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_ASSETS = "/docs-assets"
# The pages' own policy: nothing from another host and no inline script. ReDoc injects <style>
# elements and runs its search in a blob: worker; Swagger UI is started by /docs/init.js.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:"
)
_SWAGGER_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link type="text/css" rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="{assets}/favicon.png">
<title>{title}</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{init}"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """/docs and /redoc with local assets (create the app with docs_url=redoc_url=None).

    /docs is FastAPI's Swagger UI page with its inline start-up script moved to /docs/init.js,
    so the page runs under a policy that allows scripts from this origin only."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="docs-assets",
    )
    headers = {"Content-Security-Policy": DOCS_CSP}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = _SWAGGER_PAGE.format(
            assets=f"{root}{DOCS_ASSETS}",
            title=html.escape(f"{app.title} - Swagger UI"),
            init=f"{root}/docs/init.js",
        )
        return HTMLResponse(page, headers=headers)

    @app.get("/docs/init.js", include_in_schema=False)
    async def swagger_ui_init(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        config = {
            "url": f"{root}{app.openapi_url}",
            **swagger_ui_default_parameters,
            **(app.swagger_ui_parameters or {}),
        }
        script = (
            f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(config)}, {{presets: "
            "[SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]}));\n"
        )
        return Response(script, media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(headers)
        return page


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
