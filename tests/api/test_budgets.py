"""Budgets: per-key request rate (429 + Retry-After, shared in Redis), per-tenant sends per
minute, the per-tenant account cap (also under parallel creates); webhooks never limited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from database.models import Account
from tests.api.keys import imap_account, make_account, make_caller
from tests.helpers import notification, post_webhook
from tests.peers import RedisServer, free_port

AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="module")
def quiet_broker() -> Any:
    """A Redis no worker consumes: sends stay queued, budgets start empty."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def budget_client(settings: Any, quiet_broker: Any) -> AppFactory:
    """An app (through ASGI, real Redis and PostgreSQL) with some settings changed."""

    @asynccontextmanager
    async def make(**changes: Any) -> AsyncIterator[httpx.AsyncClient]:
        from api.app import create_app

        app = create_app(settings.model_copy(update={"redis_url": quiet_broker.url, **changes}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                c.postroom_app = app  # type: ignore[attr-defined]
                yield c

    return make


def assert_rate_limited(r: httpx.Response, *words: str) -> int:
    """The 429 answer: envelope, code, a sentence, and Retry-After in whole seconds >= 1."""
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"]["code"] == "rate_limited"
    for word in words:
        assert word in body["error"]["message"]
    retry_after = r.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


async def test_a_key_gets_its_burst_then_429_then_recovers_after_retry_after(
    budget_client: AppFactory, db: Any
) -> None:
    caller = await make_caller(db)
    async with budget_client(rate_limit_per_s=2.0, rate_limit_burst=5) as c:
        codes = [
            (await c.get("/v1/accounts", headers=caller.headers)).status_code for _ in range(5)
        ]
        assert codes == [200] * 5
        refused = await c.get("/v1/accounts", headers=caller.headers)
        wait = assert_rate_limited(refused, "API key", "request budget")
        assert wait == 1  # one request every 0.5 s: the next fits within a second
        await asyncio.sleep(wait)
        assert (await c.get("/v1/accounts", headers=caller.headers)).status_code == 200


async def test_the_budget_is_shared_by_api_processes(budget_client: AppFactory, db: Any) -> None:
    """Two apps (as two API processes) on one Redis spend one budget per key."""
    caller = await make_caller(db)
    async with (
        budget_client(rate_limit_per_s=0.5, rate_limit_burst=4) as one,
        budget_client(rate_limit_per_s=0.5, rate_limit_burst=4) as two,
    ):
        answers = []
        for i in range(6):
            client = one if i % 2 == 0 else two
            answers.append((await client.get("/v1/accounts", headers=caller.headers)).status_code)
    assert answers == [200, 200, 200, 200, 429, 429]


async def test_two_keys_have_independent_budgets(budget_client: AppFactory, db: Any) -> None:
    first = await make_caller(db)
    second = await make_caller(db)
    same_tenant = await make_caller(db, tenant=await _tenant_name(db, first))
    async with budget_client(rate_limit_per_s=0.2, rate_limit_burst=3) as c:
        for _ in range(3):
            assert (await c.get("/v1/accounts", headers=first.headers)).status_code == 200
        assert_rate_limited(await c.get("/v1/accounts", headers=first.headers))
        # The budget is the key's: another tenant's key, and another key of the same tenant,
        # still have theirs.
        for caller in (second, same_tenant):
            for _ in range(3):
                assert (await c.get("/v1/accounts", headers=caller.headers)).status_code == 200


async def _tenant_name(db: Any, caller: Any) -> str:
    async with db.sessionmaker() as s:
        return str(
            (
                await s.execute(
                    sa.text("SELECT name FROM tenant WHERE id = :id"), {"id": caller.tenant_id}
                )
            ).scalar_one()
        )


async def test_a_refused_request_costs_no_database_query(
    budget_client: AppFactory, db: Any
) -> None:
    caller = await make_caller(db)
    async with budget_client(rate_limit_per_s=0.2, rate_limit_burst=2) as c:
        for _ in range(2):
            await c.get("/v1/accounts", headers=caller.headers)
        statements: list[str] = []
        engine = c.postroom_app.state.db.engine.sync_engine  # type: ignore[attr-defined]
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        for _ in range(20):
            assert_rate_limited(await c.get("/v1/accounts", headers=caller.headers))
    assert statements == []


async def test_webhooks_are_never_limited(budget_client: AppFactory, db: Any) -> None:
    caller = await make_caller(db)
    async with budget_client(rate_limit_per_s=0.1, rate_limit_burst=1) as c:
        assert (await c.get("/v1/accounts", headers=caller.headers)).status_code == 200
        assert_rate_limited(await c.get("/v1/accounts", headers=caller.headers))
        answers = await asyncio.gather(
            *(
                post_webhook(c, notification("message.updated", {"id": f"burst-{i}"}))
                for i in range(40)
            )
        )
    assert [r.status_code for r in answers] == [200] * 40
    assert {r.json()["status"] for r in answers} == {"queued"}


async def test_redis_down_fails_open(settings: Any, db: Any, capfd: Any) -> None:
    """With Redis gone the API keeps serving /v1 (and says so in the log) instead of 429/500."""
    from api.app import create_app

    caller = await make_caller(db)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(
        settings.model_copy(
            update={"redis_url": dead, "rate_limit_per_s": 0.1, "rate_limit_burst": 1}
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            start = time.monotonic()
            codes = [
                (await c.get("/v1/accounts", headers=caller.headers)).status_code for _ in range(10)
            ]
            took = time.monotonic() - start
    assert codes == [200] * 10
    assert took < 3.0
    assert "rate_limiter_unavailable_failing_open" in capfd.readouterr().err


def send_body(account_id: Any) -> dict[str, Any]:
    return {
        "account_id": str(account_id),
        "to": [{"email": "bo@example.com"}],
        "subject": "Hi",
        "text": "Hello",
    }


async def test_sends_per_minute_is_a_tenant_budget(budget_client: AppFactory, db: Any) -> None:
    caller = await make_caller(db)
    other_key = await make_caller(db, tenant=await _tenant_name(db, caller))
    other_tenant = await make_caller(db)
    account = await make_account(db, caller)
    foreign_account = await make_account(db, other_tenant)
    async with budget_client(sends_per_minute=3) as c:
        for _ in range(3):
            r = await c.post("/v1/messages/send", json=send_body(account), headers=caller.headers)
            assert r.status_code == 202, r.text
        refused = await c.post("/v1/messages/send", json=send_body(account), headers=caller.headers)
        # One send every 20 s once the burst of 3 is spent.
        assert 1 <= assert_rate_limited(refused, "tenant", "send budget") <= 20
        # Every key of the tenant shares it; the key's request budget is untouched.
        assert_rate_limited(
            await c.post("/v1/messages/send", json=send_body(account), headers=other_key.headers)
        )
        assert (await c.get("/v1/accounts", headers=caller.headers)).status_code == 200
        r = await c.post(
            "/v1/messages/send", json=send_body(foreign_account), headers=other_tenant.headers
        )
        assert r.status_code == 202, r.text
    async with db.sessionmaker() as s:
        sends = (
            await s.execute(
                sa.text(
                    "SELECT count(*) FROM event "
                    "WHERE tenant_id = :t AND task_name = 'postroom.mail.send'"
                ),
                {"t": caller.tenant_id},
            )
        ).scalar_one()
    assert sends == 3


async def live_accounts(db: Any, tenant_id: Any) -> int:
    async with db.sessionmaker() as s:
        stmt = sa.select(sa.func.count()).where(
            Account.tenant_id == tenant_id, Account.deleted_at.is_(None)
        )
        return int((await s.execute(stmt)).scalar_one())


async def test_account_cap_is_a_clear_422(budget_client: AppFactory, db: Any) -> None:
    caller = await make_caller(db)
    async with budget_client(max_accounts_per_tenant=2) as c:
        ids = []
        for i in range(2):
            r = await c.post(
                "/v1/accounts", json=imap_account(f"a{i}@example.com"), headers=caller.headers
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        r = await c.post(
            "/v1/accounts", json=imap_account("a2@example.com"), headers=caller.headers
        )
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["code"] == "account_limit_reached"
        assert "2 accounts" in error["message"] and error["details"] == []
        # A deleted account frees its place.
        assert (await c.delete(f"/v1/accounts/{ids[0]}", headers=caller.headers)).status_code == 204
        r = await c.post(
            "/v1/accounts", json=imap_account("a3@example.com"), headers=caller.headers
        )
        assert r.status_code == 201, r.text
    assert await live_accounts(db, caller.tenant_id) == 2


async def test_parallel_creates_never_pass_the_cap(budget_client: AppFactory, db: Any) -> None:
    caller = await make_caller(db)
    async with budget_client(max_accounts_per_tenant=3) as c:
        answers = await asyncio.gather(
            *(
                c.post(
                    "/v1/accounts", json=imap_account(f"p{i}@example.com"), headers=caller.headers
                )
                for i in range(10)
            )
        )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [422] * 7, [r.text for r in answers]
    assert await live_accounts(db, caller.tenant_id) == 3
