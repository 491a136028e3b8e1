"""/metrics and /health/detailed: cached gauges whose cost does not grow with the data or the
number of parallel scrapes, and POSTROOM_OPS_TOKEN in front of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import event

from tests.api.test_health_metrics import sample

OpsFactory = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]


@pytest.fixture
def ops_client(settings: Any) -> OpsFactory:
    @asynccontextmanager
    async def make(**changes: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        from api.app import create_app

        app = create_app(settings.model_copy(update=changes))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                yield c, app

    return make


async def add_events(db: Any, n: int, status: str = "succeeded", tag: str = "bulk") -> None:
    """`n` event rows in one statement (finished ones unless `status` says otherwise)."""
    async with db.transaction() as s:
        await s.execute(
            sa.text(
                "INSERT INTO event (id, source, type, external_id, task_name, task_kwargs, "
                "payload, status, attempts, task_ids, history, steps, publish_count, "
                "received_at, finished_at, updated_at) "
                "SELECT gen_random_uuid(), 'nylas', 'message.created', :tag || '-' || g, "
                "'postroom.events.process', '{}', '{}', :status, 1, '[]', '[]', '[]', 1, "
                "now(), now(), now() FROM generate_series(1, :n) AS g"
            ),
            {"n": n, "status": status, "tag": tag},
        )


# The gauges count the rows of every tenant, so each test here starts from an empty database
# and takes its bulk rows away again: the next tests need not carry 20,000 extra events.
pytestmark = pytest.mark.usefixtures("empty_database")


@pytest.fixture(autouse=True)
async def remove_bulk_events(db: Any) -> AsyncIterator[None]:
    yield
    async with db.transaction() as s:
        await s.execute(
            sa.text(
                "DELETE FROM event WHERE tenant_id IS NULL "
                "AND external_id ~ '^(bulk|small|large|later)-[0-9]+$'"
            )
        )


class StatementLog:
    """Every SQL statement the app's engine sends, for counting what a scrape costs."""

    def __init__(self, app: Any) -> None:
        self.statements: list[str] = []
        event.listen(app.state.db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.statements.append(statement)

    def touching(self, table: str) -> int:
        return sum(f"FROM {table}" in s for s in self.statements)


async def test_ops_token_guards_metrics_and_detailed_but_not_live_or_ready(
    ops_client: OpsFactory,
) -> None:
    token = "ops-" + "9f2c" * 8
    async with ops_client(ops_token=SecretStr(token)) as (c, _):
        for path in ("/metrics", "/health/detailed"):
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {token}"},
                {"Authorization": f"Bearer {token}x"},
            ):
                r = await c.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"]["code"] == "unauthorized"
                assert token not in r.text
            r = await c.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code in (200, 503), r.text  # 503: no worker in this test
            assert r.status_code == 200 or path == "/health/detailed"
        assert (await c.get("/health/live")).status_code == 200
        assert (await c.get("/health/ready")).status_code == 200


async def test_without_an_ops_token_metrics_stay_open(ops_client: OpsFactory) -> None:
    async with ops_client(ops_token=None) as (c, _):
        assert (await c.get("/metrics")).status_code == 200


async def test_parallel_scrapes_share_one_refresh_and_leave_the_pool_free(
    ops_client: OpsFactory, db: Any
) -> None:
    await add_events(db, 20_000)
    # A pool of 3: twenty scrapes each holding a connection for a GROUP BY would starve it.
    async with ops_client(metrics_cache_s=60, db_pool_size=3) as (c, app):
        log = StatementLog(app)

        async def ready_meanwhile() -> list[int]:
            codes = []
            for _ in range(5):
                codes.append((await c.get("/health/ready")).status_code)
                await asyncio.sleep(0.05)
            return codes

        scrapes = [c.get("/metrics") for _ in range(20)]
        details = [c.get("/health/detailed") for _ in range(20)]
        *answers, ready_codes = await asyncio.gather(*scrapes, *details, ready_meanwhile())
    metrics_answers, detailed_answers = answers[:20], answers[20:]
    assert {r.status_code for r in metrics_answers} == {200}
    assert all(
        sample(r.text, "postroom_events", status="succeeded") == 20_000 for r in metrics_answers
    )
    assert {r.json()["events"]["succeeded"] for r in detailed_answers} == {20_000}
    assert ready_codes == [200] * 5
    # One refresh for all forty: events counted by status and the waiting ones by tenant and
    # task (the per-tenant queue gauges), one count of dead letters, one worker ping.
    assert log.touching("event") == 2
    assert log.touching("dead_letter") == 1
    assert app.state.gauges.loads == 1
    assert app.state.detailed_checks.loads == 1


async def test_scrape_cost_does_not_grow_with_the_number_of_rows(
    ops_client: OpsFactory, db: Any
) -> None:
    """Statements per scrape with 1x and 10x the events: the same, and few."""

    async def statements_per_burst(app: Any, c: httpx.AsyncClient) -> int:
        log = StatementLog(app)
        answers = await asyncio.gather(*(c.get("/metrics") for _ in range(20)))
        assert {r.status_code for r in answers} == {200}
        return len(log.statements)

    await add_events(db, 2_000, tag="small")
    async with ops_client(metrics_cache_s=60) as (c, app):
        small = await statements_per_burst(app, c)
    await add_events(db, 18_000, tag="large")
    async with ops_client(metrics_cache_s=60) as (c, app):
        large = await statements_per_burst(app, c)
        text = (await c.get("/metrics")).text
    assert sample(text, "postroom_events", status="succeeded") == 20_000
    assert small == large
    # Two SET LOCAL statement_timeout + events by status, dead letters, waiting work by tenant
    # and the webhook delivery backlog, for twenty scrapes.
    assert large <= 6


async def test_gauges_are_at_most_metrics_cache_s_old(ops_client: OpsFactory, db: Any) -> None:
    await add_events(db, 3, status="received")
    async with ops_client(metrics_cache_s=0.5) as (c, app):
        first = (await c.get("/metrics")).text
        await add_events(db, 2, status="received", tag="later")
        cached = (await c.get("/metrics")).text
        await asyncio.sleep(0.6)
        fresh = (await c.get("/metrics")).text
    assert sample(first, "postroom_events", status="received") == 3
    assert sample(cached, "postroom_events", status="received") == 3
    assert sample(fresh, "postroom_events", status="received") == 5
    assert app.state.gauges.loads == 2
