"""A hostile body sent to a real uvicorn process: it gets a clear answer, and the process keeps
answering everyone else meanwhile (/health/live within a second, all the time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api.keys import make_account, make_caller, make_message
from tests.helpers import ENV
from tests.hostile import shapes
from tests.peers import free_port, uvicorn_api, wait_port

# The body that, before the linear depth scan, kept the event loop busy for minutes.
HOSTILE_BODY_BYTES = 800_000


@pytest.fixture
async def api(database_name: str) -> AsyncIterator[str]:
    port = free_port()
    proc = uvicorn_api(ENV, port).start()
    try:
        await asyncio.to_thread(wait_port, port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def _health_while(base: str, task: asyncio.Task[httpx.Response]) -> list[float]:
    """Seconds each /health/live took, asked every 50 ms until `task` is done."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while not task.done():
            start = time.perf_counter()
            r = await http.get("/health/live")
            latencies.append(time.perf_counter() - start)
            assert r.status_code == 200
            await asyncio.sleep(0.05)
    return latencies


async def _answer_while_healthy(base: str, send) -> httpx.Response:
    task = asyncio.create_task(send())
    latencies = await _health_while(base, task)
    response = await task
    assert latencies, "the hostile request finished before a health check could run"
    assert max(latencies) < 1.0, f"/health/live took {max(latencies):.2f}s meanwhile"
    return response


def _envelope(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    assert "Traceback" not in r.text


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("make", "status"),
    [
        # Over 64 KB without a valid key: 401 from the headers, the body never read or scanned
        # (a tenant's key gets the depth check's 400: the next test).
        (shapes.json_escaped_quotes_after_brackets, 401),
        (shapes.json_escaped_quotes, 401),
    ],
)
async def test_escaped_quote_body_is_answered_and_others_keep_being_served(
    api: str, make, status: int
) -> None:
    body = make(HOSTILE_BODY_BYTES // 2)
    assert len(body) >= HOSTILE_BODY_BYTES

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=api, timeout=60) as http:
            return await http.post(
                "/v1/messages/send",
                content=body,
                headers={"content-type": "application/json", "authorization": "Bearer nope"},
            )

    _envelope(await _answer_while_healthy(api, send), status)


@pytest.mark.timeout(120)
async def test_escaped_quote_body_from_a_tenant_is_a_400(api: str, db) -> None:
    caller = await make_caller(db)
    body = shapes.json_escaped_quotes_after_brackets(HOSTILE_BODY_BYTES // 2)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=api, timeout=60) as http:
            return await http.post(
                "/v1/messages/send",
                content=body,
                headers={**caller.headers, "content-type": "application/json"},
            )

    _envelope(await _answer_while_healthy(api, send), 400)


@pytest.mark.timeout(120)
async def test_feedback_on_a_hostile_html_mail_keeps_the_loop_free(api: str, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    message = await make_message(db, caller, account, html=shapes.html_lt_a(1_000_000))

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=api, timeout=60) as http:
            return await http.post(
                f"/v1/messages/{message}/feedback", json={"label": "spam"}, headers=caller.headers
            )

    r = await _answer_while_healthy(api, send)
    assert r.status_code == 204, r.text


@pytest.mark.timeout(120)
async def test_hostile_webhook_body_is_a_401_without_a_valid_signature(api: str) -> None:
    body = shapes.json_escaped_quotes_after_brackets(HOSTILE_BODY_BYTES // 2)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=api, timeout=60) as http:
            return await http.post(
                "/webhooks/nylas",
                content=body,
                headers={"content-type": "application/json", "x-nylas-signature": "0" * 64},
            )

    _envelope(await _answer_while_healthy(api, send), 401)
