"""`make dev` as the README runs it: the API answers on :8000, the terminal shows log lines a
person can read, idle housekeeping stays quiet, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ENV
from tests.peers import VENV_BIN, Process, free_port

API_PORT = 8000  # what the README promises


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def process_tree(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of `root` and every descendant, read from /proc (pids get reused)."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: set[tuple[int, str]] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def alive(proc: tuple[int, str]) -> bool:
    pid, started = proc
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] == started and fields[0] != "Z"


def make_dev(tmp: Path) -> Process:
    env = {
        **ENV,
        # The test's own database and Redis (conftest), Flower and its history somewhere free.
        "POSTROOM_FLOWER_PORT": str(free_port()),
        "POSTROOM_FLOWER_DB": str(tmp / "flower.db"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "TMPDIR": str(tmp),
        "VENV": str(VENV_BIN.parent),
        # The suite runs in an installed virtualenv; a test must not reinstall it.
        "SKIP_INSTALL": "1",
    }
    for inherited in ("PORT", "API_PORT", "POSTROOM_LOG_JSON", "MAKEFLAGS", "MAKELEVEL"):
        env.pop(inherited, None)
    return Process("make-dev", ["make", "--no-print-directory", "dev"], env)


def wait_live(proc: Process, timeout: float) -> dict[str, Any]:
    """Poll :8000 until postroom's /health/live answers; the OpenAPI document must be ours."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"make dev exited early:\n{proc.log()[-4000:]}")
        try:
            live = httpx.get(f"http://127.0.0.1:{API_PORT}/health/live", timeout=1)
            if live.status_code == 200:
                return dict(httpx.get(f"http://127.0.0.1:{API_PORT}/openapi.json").json())
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no API on :{API_PORT} after {timeout}s:\n{proc.log()[-4000:]}")


@pytest.mark.slow  # seven processes start: about 20 s to the first answer on 2 cores
def test_make_dev_serves_the_api_on_8000_with_readable_logs_and_ctrl_c_stops_all(
    database_name: str, tmp_path: Path
) -> None:
    if port_in_use(API_PORT):
        pytest.fail(
            f"port {API_PORT} is already in use by another program on this machine; "
            "make dev's API needs it (stop that program to run this test)"
        )
    dev = make_dev(tmp_path).start()
    assert dev.proc is not None
    try:
        started = time.monotonic()
        openapi = wait_live(dev, timeout=90)
        took = time.monotonic() - started
        assert openapi["info"]["title"] == "postroom"
        # The API that answers is the one make dev started: its uvicorn bound the port.
        assert re.search(rf"api\.1\s*\|.*Uvicorn running on http://[\d.]+:{API_PORT}", dev.log())
        # Let beat tick the outbox sweep (every second in tests) a few times, idle.
        time.sleep(4)
        tree = process_tree(dev.proc.pid)
        assert len(tree) >= 6, tree  # honcho, its seven processes and their children
        output = dev.log()
    finally:
        # Ctrl-C in a terminal: SIGINT to the foreground process group (make and honcho).
        os.killpg(dev.proc.pid, signal.SIGINT)
        interrupted = time.monotonic()
        try:
            dev.proc.wait(60)
        except subprocess.TimeoutExpired:
            dev.stop(signal.SIGKILL)
            raise
    stopped = time.monotonic() - interrupted
    left = [p for p in tree if alive(p)]
    assert not left, f"still running after Ctrl-C: {left}\n{dev.log()[-3000:]}"
    assert not port_in_use(API_PORT)
    print(f"make dev: /health/live 200 after {took:.1f} s, stopped {stopped:.1f} s after Ctrl-C")

    lines = [line for line in output.splitlines() if re.search(r"\b\w+\.1\s+\|", line)]
    assert lines, output[-3000:]
    # Console renderer, not JSON, from the API and the workers (Celery's own lines included).
    assert not [line for line in lines if re.search(r"\|\s*\{\"", line)], output[-3000:]
    assert any(re.search(r"api\.1\s*\|.*\[info\s*\]", line) for line in lines), output[-3000:]
    assert any(re.search(r"short\.1\s*\|.*\[info\s*\].*ready", line) for line in lines)
    # Idle housekeeping says nothing at INFO: no received/succeeded line per sweep.
    chatter = [line for line in lines if "sweep" in line and re.search(r"\[(info|warn)", line)]
    assert not chatter, chatter[:5]
