"""/docs and /redoc work without the internet and under a strict Content-Security-Policy:
every script, style and icon they load comes from the API itself (the installed
fastapi-offline package, and Swagger UI's start-up script), none from a CDN or inline."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ENV
from tests.peers import Process, free_port, uvicorn_api, wait_port
from tests.test_flower import CHROMIUM, OFFLINE, chromium

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>")
TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_page_names_no_outside_host_and_every_asset_is_served(client, page) -> None:
    r = await client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    # Scripts only from files of this origin: the page runs under its own strict policy.
    assert not INLINE_SCRIPT.findall(r.text), r.text
    policy = dict(
        (d.split()[0], d.split()[1:]) for d in r.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == ["'self'"] and "script-src" not in policy
    assets = ASSET.findall(r.text)
    assert any(a.endswith(".js") for a in assets), r.text  # the UI's script is one of them
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        got = await client.get(asset)
        assert got.status_code == 200, asset
        kind = TYPES[Path(asset).suffix]
        assert kind in got.headers["content-type"], (asset, got.headers["content-type"])
        assert len(got.content) > (100 if asset == "/docs/init.js" else 1000), asset


@pytest.fixture
def api() -> Iterator[str]:
    port = free_port()
    proc: Process = uvicorn_api(ENV, port).start()
    try:
        wait_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing")
async def test_swagger_ui_and_redoc_render_in_a_browser_with_no_network(api: str) -> None:
    async with httpx.AsyncClient() as http:
        operations = (await http.get(f"{api}/openapi.json")).json()["paths"]
    assert "/v1/accounts" in operations
    # Each page comes with its Content-Security-Policy (default-src 'self'): Chromium enforces
    # it, so what renders here also renders behind a proxy with that policy.
    swagger = await asyncio.to_thread(chromium, f"{api}/docs", extra=(OFFLINE,))
    # Swagger UI built the operation list from /openapi.json: it ran, offline.
    assert 'data-path="/v1/accounts"' in swagger, swagger[-2000:]
    assert "opblock-summary" in swagger
    redoc = await asyncio.to_thread(chromium, f"{api}/redoc", extra=(OFFLINE,))
    assert "/v1/accounts" in redoc and "redoc-wrap" in redoc, redoc[-2000:]
