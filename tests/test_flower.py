"""`make flower` (scripts/flower.py) against a real worker, looked at in headless Chromium."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ENV, notification, post_webhook, wait_for
from tests.peers import ROOT, VENV_BIN, Process, free_port, wait_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
USER, PASSWORD = "ops", "flower-" + "pw-7f3a9c"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing")


# Chromium flag: every host name fails to resolve except 127.0.0.1, so nothing loads from
# outside this machine (a CDN script, a web font).
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def chromium(url: str, *, screenshot: Path | None = None, extra: tuple[str, ...] = ()) -> str:
    """Load `url` in a fresh headless Chromium; the DOM after scripts ran (or a screenshot)."""
    profile = tempfile.mkdtemp(prefix="postroom-chromium-")
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=4000",
        "--window-size=1400,900",
        *extra,
    ]
    argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    try:
        out = subprocess.run([*argv, url], capture_output=True, timeout=60, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out.stdout.decode(errors="replace")


def start_flower(port: int, env: dict[str, str]) -> Process:
    proc = Process(
        "flower",
        [str(VENV_BIN / "python"), "scripts/flower.py", f"--port={port}", "--address=127.0.0.1"],
        env,
    ).start()
    wait_port(port, timeout=30)
    proc.wait_log("Connected to redis", timeout=30)
    return proc


@pytest.fixture
def flower(worker: Any, tmp_path: Path) -> Iterator[tuple[int, Process]]:
    port = free_port()
    env = {
        **ENV,
        "POSTROOM_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
        "POSTROOM_FLOWER_DB": str(tmp_path / "flower.db"),
    }
    proc = start_flower(port, env)
    try:
        yield port, proc
    finally:
        proc.stop()


def test_plan_binds_loopback_without_auth_and_keeps_the_password_off_argv() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from flower import plan

    from settings import Settings

    argv, env, text = plan(Settings(flower_basic_auth=None), environ={})
    assert "--address=127.0.0.1" in argv and "--port=5555" in argv
    assert "FLOWER_BASIC_AUTH" not in env
    argv, env, text = plan(Settings(flower_basic_auth=f"{USER}:{PASSWORD}"), environ={})
    assert "--address=0.0.0.0" in argv
    assert env["FLOWER_BASIC_AUTH"] == f"{USER}:{PASSWORD}"
    assert PASSWORD not in " ".join(argv) and PASSWORD not in text


def test_plan_keeps_the_history_in_the_data_directory_unless_told_not_to() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from flower import plan

    from settings import Settings

    argv, _, text = plan(Settings(flower_basic_auth=None), environ={})
    assert "--persistent=True" in argv and f"--db={ROOT / '.data' / 'flower.db'}" in argv
    assert any(a.startswith("--state_save_interval=") for a in argv)
    assert str(ROOT / ".data" / "flower.db") in text
    argv, _, text = plan(Settings(flower_basic_auth=None, flower_db="/srv/f.db"), environ={})
    assert "--db=/srv/f.db" in argv
    argv, _, text = plan(Settings(flower_basic_auth=None, flower_db=""), environ={})
    assert not [a for a in argv if a.startswith(("--persistent", "--db"))]
    assert "memory only" in text


async def flower_tasks(base: str, **kw: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{base}/api/tasks", **kw)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_flower_keeps_its_task_history_across_a_restart(worker, client, tmp_path) -> None:
    port, db = free_port(), tmp_path / "history" / "flower.db"
    # Flower's HTTP API answers only behind a login.
    env = {**ENV, "POSTROOM_FLOWER_DB": str(db), "POSTROOM_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    auth = httpx.BasicAuth(USER, PASSWORD)
    base = f"http://127.0.0.1:{port}"
    first = await asyncio.to_thread(start_flower, port, env)
    try:
        assert f"history in {db}" in first.log()
        async with httpx.AsyncClient() as http:

            async def worker_known() -> bool:
                r = await http.get(f"{base}/api/workers", params={"refresh": "1"}, auth=auth)
                return r.status_code == 200 and any(n.startswith("test-") for n in r.json())

            await wait_for(worker_known, timeout=30, message="flower to see the worker")
        r = await post_webhook(
            client, notification("message.created", {"id": "flower-h1"}, grant_id="grant-unknown")
        )
        assert r.status_code == 200

        async def recorded() -> Any:
            tasks = await flower_tasks(base, auth=auth)
            return [
                t
                for t in tasks.values()
                if t.get("name") == "postroom.events.process" and t.get("state") == "SUCCESS"
            ]

        done = await wait_for(recorded, timeout=30, message="flower to record the task")
        uuids = {t["uuid"] for t in done}
    finally:
        # SIGTERM, as honcho and Docker stop it: Flower writes its state on the way out.
        first.stop(signal.SIGTERM)
    assert first.proc is not None and first.proc.returncode == 0, first.log()[-2000:]
    assert list(db.parent.glob("flower.db*")), list(db.parent.iterdir())
    assert oct(db.parent.stat().st_mode & 0o777) == oct(0o700)

    second = await asyncio.to_thread(start_flower, port, env)
    try:
        # No task runs now: whatever Flower lists came from the file.
        tasks = await flower_tasks(base, auth=auth)
        assert uuids <= set(tasks), (uuids, list(tasks))
        for uuid in uuids:
            assert tasks[uuid]["state"] == "SUCCESS"
            assert tasks[uuid]["name"] == "postroom.events.process"
    finally:
        second.stop(signal.SIGTERM)


async def test_flower_shows_the_worker_online_and_the_task(flower, worker, client) -> None:
    port, proc = flower
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/")).status_code == 401
        auth = httpx.BasicAuth(USER, PASSWORD)

        async def worker_known() -> bool:
            r = await http.get(f"{base}/api/workers", params={"refresh": "1"}, auth=auth)
            return r.status_code == 200 and any(n.startswith("test-") for n in r.json())

        await wait_for(worker_known, timeout=30, message="flower to see the worker")
        r = await post_webhook(
            client, notification("message.created", {"id": "flower-1"}, grant_id="grant-unknown")
        )
        task_id = None

        async def task_seen() -> Any:
            tasks = (await http.get(f"{base}/api/tasks", auth=auth)).json()
            done = [
                t
                for t in tasks.values()
                if t.get("name") == "postroom.events.process" and t.get("state") == "SUCCESS"
            ]
            return done[0] if done else None

        task = await wait_for(task_seen, timeout=30, message="flower to record the task")
        task_id = task["uuid"]
        assert r.status_code == 200

    creds = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    started = time.monotonic()
    dashboard = await asyncio.to_thread(chromium, f"{creds}/")
    tasks_page = await asyncio.to_thread(chromium, f"{creds}/tasks")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "flower.png"
    await asyncio.to_thread(chromium, f"{creds}/tasks", screenshot=shot)
    await asyncio.to_thread(chromium, f"{creds}/", screenshot=ARTIFACTS / "flower-workers.png")
    assert time.monotonic() - started < 120
    assert "test-" in dashboard and "Online" in dashboard, dashboard[-2000:]
    assert task_id in tasks_page and "postroom.events.process" in tasks_page
    assert shot.stat().st_size > 10_000
    assert PASSWORD not in proc.log()
