"""Templates written to stall or kill the API (issue 20, item 1), sent to a real uvicorn
process: each is refused (422 when stored, or 422 when a send renders it), the answer comes
back on a live connection, and /health/live answers within a second the whole time.

The shapes are our own variants of what the review measured: numbers that grow by `**` level
after level, lists summed into lists, lists of lists multiplied then printed or compared, and
a template of a quarter of a megabyte of expressions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api.keys import make_account, make_caller
from tests.helpers import ENV
from tests.peers import free_port, uvicorn_api, wait_port

BOMBS = {
    # Each exponent is small; the number grows 50x per level.
    "power_tower": ("{{ ((((7 ** 50) ** 50) ** 50) ** 50) > 3 }}", {}),
    "power_tower_vars": ("{{ (((b ** e) ** e) ** e) % 7 }}", {"b": 999, "e": 60}),
    # Squared again and again by `*`: the bit length doubles per step.
    "squarings": (
        "{% set n0 = 3 ** 60 %}"
        + "".join(f"{{% set n{i + 1} = n{i} * n{i} %}}" for i in range(40))
        + "{{ n40 > 1 }}",
        {},
    ),
    # Summing lists into a list is quadratic.
    "list_sum": ("{{ ([['x']] * 600000)|sum(start=[]) }}", {}),
    "list_sum_vars": ("{{ (xs * k)|sum(start=[]) }}", {"xs": [[1, 2]], "k": 400000}),
    # The outer length is 1; the nested count is 10^12.
    "nested_print": ("{{ ([['ab'] * 900000] * 900000)|string }}", {}),
    "nested_upper": ("{{ ([[7] * 1000000] * 1000000)|upper }}", {}),
    "nested_join": ("{{ ([[1] * 999999] * 999999)|join(',') }}", {}),
    # Two distinct inner lists: every outer step compares a million items.
    "nested_compare": ("{{ [[0] * 1000000] * 1000000 == [[0] * 1000000] * 1000000 }}", {}),
    "nested_in": ("{{ ([1] * 999999 + [2]) in ([[1] * 1000000] * 1000000) }}", {}),
}


def huge_template() -> str:
    """About 256 KB of tiny expressions: a compile that used to take seconds."""
    return "{{ a }}-" * (256 * 1024 // 8 - 1)


def deep_template() -> str:
    return "{{ " + "a + " * 60_000 + "a }}"


@pytest.fixture
async def api(database_name: str) -> AsyncIterator[str]:
    port = free_port()
    proc = uvicorn_api(ENV, port).start()
    try:
        await asyncio.to_thread(wait_port, port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def _probe(base: str, done: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        while not done.is_set():
            start = time.perf_counter()
            try:
                r = await http.get("/health/live", timeout=1.5)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start if ok else 99.0)
            if not ok:
                return
            await asyncio.sleep(0.05)


async def _attack(
    base: str, headers: dict[str, str], account: str, name: str, source: str, variables: dict
) -> tuple[int, int | None]:
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as http:
        r = await http.put(f"/v1/templates/{name}", json={"subject": "s", "text": source})
        if r.status_code == 422:
            assert r.json()["error"]["code"] == "template_invalid", r.text
            return 422, None
        assert r.status_code == 201, r.text
        send = {
            "account_id": account,
            "to": [{"email": "bo@example.org"}],
            "template": name,
            "variables": variables,
        }
        r2 = await http.post("/v1/messages/send", json=send)
        assert r2.json()["error"]["code"] == "template_invalid", r2.text
        return 201, r2.status_code


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", [*BOMBS, "huge", "deep"])
async def test_a_template_bomb_is_refused_and_the_api_keeps_answering(
    api: str, db, name: str
) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    if name == "huge":
        source, variables = huge_template(), {"a": 1}
    elif name == "deep":
        source, variables = deep_template(), {"a": 1}
    else:
        source, variables = BOMBS[name]
    done = asyncio.Event()
    latencies: list[float] = []
    probe = asyncio.create_task(_probe(api, done, latencies))
    await asyncio.sleep(0.2)
    attack = asyncio.create_task(
        _attack(api, caller.headers, str(account), name.replace("_", "-"), source, variables)
    )
    # Stop at whichever comes first: the answer, or a health check that failed (no point
    # waiting for a process that has stopped answering).
    await asyncio.wait({attack, probe}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    done.set()
    await probe
    if not attack.done():
        attack.cancel()
    assert latencies and max(latencies) < 1.0, f"/health/live took {max(latencies):.2f}s"
    assert attack.done(), "no answer within 60 s"
    saved, sent = attack.result()
    assert saved == 422 or sent == 422, (saved, sent)
    # The API still serves a normal template afterwards.
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=caller.headers) as http:
        ok = await http.put("/v1/templates/ok", json={"subject": "Hi {{ n }}", "text": "t"})
        assert ok.status_code == 201, ok.text
