"""Ops endpoints fail closed outside development (issue 20, item 6): a scraper on the open
network reads nothing of /metrics or /health/detailed without the ops token, and without a
token configured nobody does; /health/live and /health/ready stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
OPS = ("/metrics", "/health/detailed")
OPEN = ("/health/live", "/health/ready")
Factory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_client(settings: Any) -> Factory:
    @asynccontextmanager
    async def make(**changes: Any) -> AsyncIterator[httpx.AsyncClient]:
        from api.app import create_app

        app = create_app(settings.model_copy(update=changes))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                yield c

    return make


def _served(path: str, r: httpx.Response) -> None:
    """The figures themselves (/health/detailed is 503 `degraded` with no worker running)."""
    if path == "/metrics":
        assert r.status_code == 200 and "postroom_" in r.text, r.text[:200]
    else:
        assert r.status_code in (200, 503) and "checks" in r.json(), r.text[:200]


@pytest.mark.parametrize("environment", ["production", "staging", "Development", ""])
async def test_without_a_token_ops_endpoints_refuse_everyone(
    app_client: Factory, environment: str
) -> None:
    async with app_client(environment=environment, ops_token=None) as c:
        for path in OPS:
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
                r = await c.get(path, headers=headers)
                assert r.status_code == 503, (path, r.status_code)
                body = r.json()
                assert body["error"]["code"] == "service_unavailable"
                assert "POSTROOM_OPS_TOKEN" in body["error"]["message"]
                assert "postroom_" not in r.text  # no figure leaks
        for path in OPEN:
            assert (await c.get(path)).status_code == 200, path


async def test_with_a_token_only_its_bearer_reads_them(app_client: Factory) -> None:
    token = "ops-secret-token-123"
    async with app_client(environment="production", ops_token=SecretStr(token)) as c:
        for path in OPS:
            for headers in (
                {},
                {"Authorization": f"Bearer {token}x"},
                {"Authorization": f"Basic {token}"},
                {"Authorization": token},
            ):
                r = await c.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
            _served(path, await c.get(path, headers={"Authorization": f"Bearer {token}"}))
        for path in OPEN:
            assert (await c.get(path)).status_code == 200, path


async def test_development_without_a_token_stays_open(app_client: Factory) -> None:
    async with app_client(environment="development", ops_token=None) as c:
        for path in OPS:
            _served(path, await c.get(path))


def test_make_env_writes_a_random_ops_token() -> None:
    import subprocess
    import sys

    runs = [
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_env.py")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    tokens = []
    for out in runs:
        lines = [line for line in out.splitlines() if line.startswith("POSTROOM_OPS_TOKEN=")]
        assert len(lines) == 1
        tokens.append(lines[0].split("=", 1)[1])
        assert len(tokens[-1]) >= 32
    assert tokens[0] != tokens[1]
