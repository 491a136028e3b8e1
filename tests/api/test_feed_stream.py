"""GET /v1/feed with `Accept: text/event-stream`, through a real uvicorn process as a browser's
EventSource would use it: events arrive live with `id:` = seq, a reconnect with Last-Event-ID
goes on after it, a quiet stream gets keep-alive comments, and a tenant's streams are capped
(a closed stream frees its place)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from services.tenant_events.emit import TenantEventType, emit
from tests.api.keys import Caller, make_caller
from tests.helpers import ENV
from tests.peers import free_port, uvicorn_api, wait_port

MAX_STREAMS = 2


@pytest.fixture(scope="module")
def api_url(database_name: str) -> Iterator[str]:
    port = free_port()
    env = {
        **ENV,
        "POSTROOM_FEED_POLL_S": "0.05",
        "POSTROOM_FEED_HEARTBEAT_S": "0.3",
        "POSTROOM_FEED_MAX_STREAMS": str(MAX_STREAMS),
    }
    proc = uvicorn_api(env, port).start()
    try:
        wait_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def _emit(db: Any, caller: Caller, n: int) -> None:
    async with db.transaction() as s:
        for i in range(n):
            await emit(
                s, tenant_id=caller.tenant_id, type=TenantEventType.job_failed, data={"i": i}
            )


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """SSE frames as dicts of their fields (`comment` for a `:` line)."""
    frame: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            key, _, value = line.partition(":")
            frame[key] = value.removeprefix(" ")


async def _events(response: httpx.Response, n: int, timeout: float = 10.0) -> list[dict]:
    out: list[dict] = []

    async def read() -> None:
        async for f in _frames(response):
            if "data" in f:
                out.append(f)
                if len(out) == n:
                    return

    await asyncio.wait_for(read(), timeout)
    return out


def _stream(c: httpx.AsyncClient, caller: Caller, **headers: str) -> Any:
    return c.stream(
        "GET", "/v1/feed", headers={**caller.headers, "Accept": "text/event-stream", **headers}
    )


async def test_events_arrive_live_with_the_seq_as_id(api_url, db) -> None:
    caller = await make_caller(db)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as c:
        async with _stream(c, caller) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            await _emit(db, caller, 2)  # after the stream opened
            got = await _events(r, 2)
        page = (await c.get("/v1/feed", headers=caller.headers)).json()["data"]
    assert [f["id"] for f in got] == ["1", "2"]
    assert [f["event"] for f in got] == ["job.failed", "job.failed"]
    assert [json.loads(f["data"]) for f in got] == page


async def test_a_reconnect_with_last_event_id_goes_on_after_it(api_url, db) -> None:
    caller = await make_caller(db)
    await _emit(db, caller, 4)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as c:
        async with _stream(c, caller, **{"Last-Event-ID": "2"}) as r:
            got = await _events(r, 2)
        assert [f["id"] for f in got] == ["3", "4"]
        async with c.stream(
            "GET",
            "/v1/feed",
            params={"after": 3},
            headers={**caller.headers, "Accept": "text/event-stream"},
        ) as r:
            assert [f["id"] for f in await _events(r, 1)] == ["4"]


async def test_a_quiet_stream_gets_keep_alive_comments(api_url, db) -> None:
    caller = await make_caller(db)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as c, _stream(c, caller) as r:

        async def comment() -> dict:
            async for f in _frames(r):
                if "comment" in f:
                    return f
            raise AssertionError("the stream ended")

        assert (await asyncio.wait_for(comment(), 5))["comment"] == "keep-alive"


async def test_streams_are_capped_per_tenant_and_a_closed_one_frees_its_place(api_url, db) -> None:
    caller, other = await make_caller(db), await make_caller(db)
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as c:
        first = await c.send(
            c.build_request(
                "GET", "/v1/feed", headers={**caller.headers, "Accept": "text/event-stream"}
            ),
            stream=True,
        )
        async with _stream(c, caller) as second:
            assert first.status_code == second.status_code == 200
            async with _stream(c, caller) as third:
                assert third.status_code == 429
                await third.aread()
                assert third.json()["error"]["code"] == "rate_limited"
            async with _stream(c, other) as theirs:  # another tenant has its own streams
                assert theirs.status_code == 200
        await first.aclose()

        async def reopened() -> int:
            async with _stream(c, caller) as again:
                return again.status_code

        for _ in range(50):  # the server notices the closed stream within a poll or two
            if await reopened() == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a closed stream kept its place")
