"""One-click unsubscribe (RFC 8058): POST /u/{token} suppresses the recipient for the tenant,
idempotently, with a plain answer; GET shows a page with the button and changes nothing; a
token we did not sign is 404. The page is also driven in headless Chromium: it renders, the
button POSTs, the address ends up suppressed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import websockets

from database.models import Suppression
from services.reports import tokens
from tests.api.keys import make_caller
from tests.helpers import ENV, wait_for
from tests.peers import Process, free_port, uvicorn_api, wait_port
from tests.test_flower import ARTIFACTS, CHROMIUM, OFFLINE


async def _suppressed(db: Any, tenant_id: Any) -> dict[str, str]:
    async with db.transaction() as s:
        rows = (
            await s.execute(sa.select(Suppression).where(Suppression.tenant_id == tenant_id))
        ).scalars()
        return {r.email: r.reason for r in rows}


async def test_get_shows_a_page_and_changes_nothing(client, db, settings) -> None:
    caller = await make_caller(db)
    token = tokens.unsubscribe_token(settings, tenant_id=caller.tenant_id, email="Bo@Example.org")
    r = await client.get(f"/u/{token}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in r.text and "bo@example.org" not in r.text.lower()
    assert "form-action 'self'" in r.headers["content-security-policy"]
    assert await _suppressed(db, caller.tenant_id) == {}


async def test_post_suppresses_once_and_again_is_harmless(client, db, settings) -> None:
    caller = await make_caller(db)
    token = tokens.unsubscribe_token(settings, tenant_id=caller.tenant_id, email="bo@example.org")
    for _ in range(2):
        r = await client.post(
            f"/u/{token}",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "unsubscribed" in r.text and "@" not in r.text
    assert await _suppressed(db, caller.tenant_id) == {"bo@example.org": "unsubscribed"}
    other = await make_caller(db)
    assert await _suppressed(db, other.tenant_id) == {}


async def test_a_token_we_did_not_sign_is_404(client, db, settings) -> None:
    caller = await make_caller(db)
    token = tokens.unsubscribe_token(settings, tenant_id=caller.tenant_id, email="bo@example.org")
    body, mac = token.split(".")
    forged = tokens.unsubscribe_token(settings, tenant_id=caller.tenant_id, email="x@example.org")
    for bad in (f"{forged.split('.')[0]}.{mac}", f"{body}.AAAA", "nonsense", "a" * 900):
        assert (await client.post(f"/u/{bad}")).status_code in (404, 422)
        assert (await client.get(f"/u/{bad}")).status_code in (404, 422)
    assert await _suppressed(db, caller.tenant_id) == {}


@pytest.fixture
def api() -> Iterator[str]:
    port = free_port()
    proc: Process = uvicorn_api(ENV, port).start()
    try:
        wait_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


class Browser:
    """Headless Chromium driven over the DevTools protocol (load, evaluate, screenshot)."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="postroom-chromium-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "--window-size=900,600",
                OFFLINE,
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.next_id = 0

    def endpoint(self) -> str:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as answer:
            pages = [p for p in json.load(answer) if p["type"] == "page"]
        return pages[0]["webSocketDebuggerUrl"]  # type: ignore[no-any-return]

    async def call(self, ws: Any, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == self.next_id:
                return message.get("result", {})  # type: ignore[no-any-return]

    async def text(self, ws: Any) -> str:
        got = await self.call(
            ws, "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return str(got.get("result", {}).get("value", ""))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", self.profile], check=False)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing")
async def test_the_page_in_chromium_posts_and_suppresses(api: str, db, settings) -> None:
    caller = await make_caller(db)
    token = tokens.unsubscribe_token(settings, tenant_id=caller.tenant_id, email="web@example.org")
    browser = Browser()
    try:
        url = await asyncio.to_thread(browser.endpoint)
        async with websockets.connect(url, max_size=None) as ws:
            await browser.call(ws, "Page.enable")
            await browser.call(ws, "Page.navigate", url=f"{api}/u/{token}")

            async def page_shown() -> bool:
                return "Stop receiving" in await browser.text(ws)

            await wait_for(page_shown, timeout=20, message="the unsubscribe page")
            shot = await browser.call(ws, "Page.captureScreenshot", format="png")
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "unsubscribe_page.png").write_bytes(
                __import__("base64").b64decode(shot["data"])
            )
            assert await _suppressed(db, caller.tenant_id) == {}, "GET must change nothing"
            await browser.call(
                ws,
                "Runtime.evaluate",
                expression="document.getElementById('unsubscribe').click()",
            )

            async def done() -> bool:
                return "You are unsubscribed" in await browser.text(ws)

            await wait_for(done, timeout=20, message="the answer to the button's POST")
    finally:
        await asyncio.to_thread(browser.close)
    assert await _suppressed(db, caller.tenant_id) == {"web@example.org": "unsubscribed"}


async def test_a_send_records_where_its_links_start(client, db) -> None:
    """Unset POSTROOM_PUBLIC_URL: the scheme and host the send request came to."""
    from database.models import SendDraft
    from tests.api.keys import make_account

    caller = await make_caller(db)
    account = await make_account(db, caller)
    body = {"account_id": str(account), "to": [{"email": "a@example.org"}], "subject": "s"}
    plain = await client.post("/v1/messages/send", json=body, headers=caller.headers)
    asked = await client.post(
        "/v1/messages/send",
        json={**body, "unsubscribe": True, "verp": True},
        headers=caller.headers,
    )
    assert plain.status_code == asked.status_code == 202, asked.text
    async with db.transaction() as s:
        drafts = {
            d.event_id: d.options
            for d in (
                await s.execute(sa.select(SendDraft).where(SendDraft.tenant_id == caller.tenant_id))
            ).scalars()
        }
    import uuid

    assert drafts[uuid.UUID(plain.json()["event_id"])] == {}
    assert drafts[uuid.UUID(asked.json()["event_id"])] == {
        "unsubscribe": True,
        "verp": True,
        "public_url": "http://postroom.test",
    }
