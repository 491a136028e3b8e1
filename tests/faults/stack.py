"""The whole system as separate processes the fault tests can kill: a private PostgreSQL
cluster and Redis server on free ports, a fake Nylas, the API, workers and beat."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fakes.nylas_server import FakeNylas
from tests.helpers import NYLAS_API_KEY, WEBHOOK_SECRET
from tests.peers import (
    Process,
    RedisServer,
    celery_worker,
    free_port,
    migrate,
    queues_of,
    uvicorn_api,
    wait_port,
)

PG_BIN = Path(os.environ.get("POSTROOM_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PgCluster:
    """initdb + pg_ctl in a temp dir. PostgreSQL refuses to run as root: as root, the cluster
    belongs to the `postgres` user and every command runs through runuser."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="postroom-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(
            cmd, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postroom"

    def init(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        return self.start()

    def start(self) -> PgCluster:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.dir / "pg.log"),
            "-w",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_redis(redis: RedisServer) -> None:
    """SIGKILL: nothing is saved, every queued message is gone."""
    assert redis.proc is not None
    redis.proc.kill()
    redis.proc.wait(10)


def start_redis_again(redis: RedisServer) -> None:
    Path(redis.dir).mkdir(parents=True, exist_ok=True)
    redis.start()
    wait_port(redis.port)


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (the prefork pool of a Celery worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may contain spaces and parentheses: the ppid follows the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Stack:
    def __init__(self, env_overrides: dict[str, str]) -> None:
        self.pg = PgCluster().init()
        self.redis = RedisServer().start()
        self.nylas = FakeNylas(api_key=NYLAS_API_KEY).start()
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "POSTROOM_DATABASE_URL": self.pg.url,
            "POSTROOM_REDIS_URL": self.redis.url,
            "POSTROOM_NYLAS_API_URI": self.nylas.url,
            "POSTROOM_NYLAS_API_KEY": NYLAS_API_KEY,
            "POSTROOM_NYLAS_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **env_overrides,
        }
        migrate(self.env)
        self.api = uvicorn_api(self.env, self.api_port).start()
        self.workers: list[Process] = []
        self.beat = Process(
            "beat",
            [
                self.env.get("CELERY_BIN", _celery()),
                "-A",
                "worker.app",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(self.pg.dir / "beat-schedule"),
            ],
            self.env,
        )
        # The sweeper gets its own single-process worker, so busy task workers never starve it.
        self.sweeper = celery_worker(self.env, name="periodic", queues="periodic", concurrency=1)
        self.beat.start()
        self.sweeper.start()
        self.start_worker()
        wait_port(self.api_port, timeout=30)
        self.sweeper.wait_log("ready.", timeout=60)

    def beat_alive(self) -> bool:
        return self.beat.proc is not None and self.beat.proc.poll() is None

    def ensure_beat(self) -> None:
        """Each fault starts with a running beat, whatever the previous fault did to it."""
        if not self.beat_alive():
            self.beat.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_worker(self) -> Process:
        proc = celery_worker(
            self.env,
            name=f"w{len(self.workers)}",
            queues=queues_of("short", "bulk"),
            concurrency=2,
        ).start()
        proc.wait_log("ready.", timeout=60)
        self.workers.append(proc)
        return proc

    def close(self) -> None:
        for proc in [*self.workers, self.sweeper, self.beat, self.api]:
            proc.stop(timeout=10)
        self.nylas.stop()
        self.redis.stop()
        self.pg.destroy()


def _celery() -> str:
    from tests.peers import VENV_BIN

    return str(VENV_BIN / "celery")


def wait_until(check: object, timeout: float, interval: float = 0.2) -> float:
    """Poll a callable until truthy; return seconds waited (raise on timeout)."""
    assert callable(check)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"not true after {timeout}s")
