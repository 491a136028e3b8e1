"""Real peers started by the test session: a private Redis server, a migrated database,
and Celery worker / uvicorn processes running the project's own commands."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class RedisServer:
    """A throw-away redis-server on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="postroom-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_of(self, db: int) -> str:
        """Another database of this server: what a test writes or flushes there never touches
        the broker's database (0), where kombu keeps its queues and exchange bindings."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--logfile",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [str(VENV_BIN / "python"), "scripts/createdb.py"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Process:
    """A child process with its output in a log file, stopped with a signal."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(tempfile.mkdtemp(prefix=f"postroom-{name}-")) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not print {needle!r}:\n{self.log()[-3000:]}")

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process group without waiting."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        self.send_signal(sig)
        self.wait_or_kill(timeout)

    def wait_or_kill(self, timeout: float) -> None:
        """Wait for a signalled process to exit; SIGKILL it after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def queues_of(*classes: str) -> str:
    """The -Q list of latency classes (their lanes), as `make worker-short` computes it."""
    from worker.config import Queue, lane_names

    return ",".join(name for c in classes for name in lane_names(Queue(c)))


def celery_worker(
    env: dict[str, str],
    *,
    name: str,
    queues: str | None = None,
    concurrency: int = 2,
) -> Process:
    queues = queues or queues_of("short", "bulk", "periodic")
    return Process(
        f"worker-{name}",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "worker.app",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-l",
            "INFO",
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    )


class Workers:
    """`make worker`'s layout: a short, a bulk and a periodic worker, used as one.

    All three write one log file (appending), so an offset into `log()` stays valid as it grows.
    """

    def __init__(self, env: dict[str, str], *, name: str, concurrency: int = 2) -> None:
        self.procs = [
            celery_worker(env, name=f"{name}-short", queues=queues_of("short"), concurrency=2),
            celery_worker(env, name=f"{name}-bulk", queues=queues_of("bulk"), concurrency=2),
            celery_worker(
                env, name=f"{name}-periodic", queues=queues_of("periodic"), concurrency=1
            ),
        ]
        for proc in self.procs[1:]:
            proc.log_path = self.procs[0].log_path

    def start(self) -> Workers:
        for proc in self.procs:
            proc.start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(" ready.") < len(self.procs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers are not ready:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def wait_log(self, needle: str, timeout: float = 30.0) -> None:
        self.procs[0].wait_log(needle, timeout)

    def log(self) -> str:
        return self.procs[0].log()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """All three at once: each finishes its task in hand in parallel, not one after the
        other (the session's teardown waited for them in turn)."""
        for proc in self.procs:
            proc.send_signal(sig)
        for proc in self.procs:
            proc.wait_or_kill(timeout)


def uvicorn_api(env: dict[str, str], port: int) -> Process:
    return Process(
        "api",
        [
            str(VENV_BIN / "uvicorn"),
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ],
        env,
    )
