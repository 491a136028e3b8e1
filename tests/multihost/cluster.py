"""postroom spread over hosts: a database host (PostgreSQL and Redis), an API host (uvicorn and
beat), worker hosts (`make worker`'s short and bulk workers) and a host for the fake Nylas.

Each service is started the way tests/peers.py and tests/faults/stack.py start it, inside its
host (`ip netns exec`), listening on the host's bridge address; every host reaches the others
over the bridge only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.fakes.nylas_server import FakeNylas, FakeNylasState, _Handler, _Server
from tests.faults.stack import PG_BIN, PgCluster
from tests.helpers import NYLAS_API_KEY, WEBHOOK_SECRET
from tests.multihost.netns import Host, Network, inside
from tests.peers import VENV_BIN, Process, Workers, migrate

API_PORT = 8000
PG_PORT = 5432
REDIS_PORT = 6379


def wait_tcp(addr: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {addr}:{port} after {timeout}s")


class HostPg(PgCluster):
    """A fresh PostgreSQL cluster living in `host`, on its bridge address, standard port."""

    def __init__(self, host: Host, subnet: str) -> None:
        super().__init__()
        self.host, self.subnet, self.port = host, subnet, PG_PORT

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(
            self.host.wrap(cmd),
            check=check,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@{self.host.addr}:{self.port}/postroom"

    def init(self) -> HostPg:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        # initdb trusts loopback only; the other hosts come over the bridge.
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.subnet}.0/24 trust\n")
        return self.start()

    def start(self) -> HostPg:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={self.host.addr} "
            "-c fsync=off -c max_connections=300"
        )
        log = str(self.dir / "pg.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", log, "-w", "start")
        return self


class HostNylas(FakeNylas):
    """The fake Nylas, its listening socket made inside `host` (the server thread runs here,
    in the test process, so the test still drives it directly)."""

    def __init__(self, host: Host, api_key: str) -> None:
        with inside(host.ns):
            self.server = _Server((host.addr, 0), _Handler)
        self.server.state = FakeNylasState(api_key=api_key)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


class Cluster:
    """Builds the hosts in the order they depend on each other; close() undoes all of it."""

    def __init__(self, overrides: dict[str, str]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-multihost-"))
        self.procs: list[Process] = []
        self.workers: dict[str, Workers] = {}
        self.pg: HostPg | None = None
        self.nylas: HostNylas | None = None
        self.net = Network()
        try:
            self._build(overrides)
        except BaseException:
            self.close()
            raise

    def _build(self, overrides: dict[str, str]) -> None:
        net = self.net
        self.db_host = net.add_host("db")
        self.api_host = net.add_host("api")
        self.worker_hosts = [net.add_host("w1"), net.add_host("w2")]
        self.nylas_host = net.add_host("nylas")

        self.pg = HostPg(self.db_host, net.subnet).init()
        redis_argv = [shutil.which("redis-server") or "/usr/bin/redis-server"]
        redis_argv += f"--port {REDIS_PORT} --bind {self.db_host.addr} --protected-mode no".split()
        redis_argv += ["--appendonly", "no", "--save", "", "--dir", str(self.tmp)]
        redis = Process("redis", self.db_host.wrap(redis_argv), dict(os.environ))
        self.procs.append(redis.start())
        self.nylas = nylas = HostNylas(self.nylas_host, NYLAS_API_KEY)
        nylas.start()

        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            {
                "POSTROOM_DATABASE_URL": self.pg.url,
                "POSTROOM_REDIS_URL": f"redis://{self.db_host.addr}:{REDIS_PORT}/0",
                "POSTROOM_NYLAS_API_URI": nylas.url,
                "POSTROOM_NYLAS_API_KEY": NYLAS_API_KEY,
                "POSTROOM_NYLAS_WEBHOOK_SECRET": WEBHOOK_SECRET,
                **overrides,
            }
        )
        self.env = env
        wait_tcp(self.db_host.addr, REDIS_PORT)
        migrate(env)  # from the test's own namespace, over the bridge

        api = self.api_host
        # Procfile's `api` (one uvicorn process) and `beat`, on the API host's address.
        uvicorn = [str(VENV_BIN / "uvicorn"), "api.main:app", "--host", api.addr]
        uvicorn += f"--port {API_PORT} --loop uvloop --http httptools --no-access-log".split()
        self.api = Process("api", api.wrap(uvicorn), env)
        beat = [str(VENV_BIN / "celery"), "-A", "worker.app", "beat", "-l", "INFO"]
        beat += ["--schedule", str(self.tmp / "beat-schedule")]
        self.beat = Process("beat", api.wrap(beat), env)
        self.procs += [self.api.start(), self.beat.start()]
        for host in self.worker_hosts:
            workers = Workers(env, name=host.role)
            for proc in workers.procs:
                proc.argv = host.wrap(proc.argv)
            self.workers[host.role] = workers.start()
        wait_tcp(api.addr, API_PORT, timeout=60)
        for workers in self.workers.values():
            workers.wait_ready(timeout=90)

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host.addr}:{API_PORT}"

    def close(self) -> None:
        for workers in self.workers.values():
            workers.stop(timeout=5)
        for proc in reversed(self.procs):
            proc.stop(timeout=5)
        if self.nylas is not None:
            with contextlib.suppress(Exception):
                self.nylas.stop()
        if self.pg is not None:
            self.pg.stop("immediate")
        self.net.close()  # kills whatever is still running inside a host
        if self.pg is not None:
            shutil.rmtree(self.pg.dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
