"""Templates are checked and rendered in worker processes, never on the API's event loop
(docs/security.md "Templates").

The sandbox (services/outbound/templates.py) charges every operator and filter by the size of
its operands before it runs. This pool is the second wall, for whatever the sandbox misses:
each job runs in a separate process with a hard wall time (the parent kills the process when
it passes), a CPU-time limit (RLIMIT_CPU: the kernel ends the process) and an address-space
limit (RLIMIT_AS: an allocation past it fails with MemoryError). A process killed, out of time
or out of memory is replaced by a fresh one; the template that did it is refused with 422
`template_invalid` (at save, or at send). The caller's event loop only awaits a thread that
waits on a pipe.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import resource
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from services.outbound import templates
from services.outbound.templates import Parts, TemplateInvalid, TemplateVariableMissing

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Limits:
    # Processes per API process (each about 30 MB); jobs beyond these wait their turn.
    workers: int = 2
    # One job (check or render of all parts): wall-clock seconds, then the process is killed.
    wall_s: float = 5.0
    # CPU seconds one job may use (the sandbox stops a render at 1 s; this is the backstop).
    cpu_s: int = 3
    # Address space a worker may grow by past what it holds once started.
    memory_bytes: int = 512 * 1024 * 1024
    # A worker is replaced after this many jobs, so no job inherits a grown heap for ever.
    jobs_per_worker: int = 1_000
    # Seconds a new worker may take to start (import Jinja2) before it is counted a failure.
    start_s: float = 30.0


def _address_space() -> int:
    """Bytes of virtual memory this process holds now (Linux: /proc/self/statm)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _limit_memory(memory_bytes: int) -> None:
    """The worker's initializer: RLIMIT_AS at what it holds now plus its allowance."""
    held = _address_space()
    if not held:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = held + memory_bytes
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _limit_cpu(cpu_s: int) -> None:
    """RLIMIT_CPU counts the process's whole life: before each job the soft limit is set to
    what it has used so far plus the job's allowance (SIGXCPU ends it past that)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_s
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _job(op: str, parts: Parts, variables: dict[str, Any]) -> tuple[str, Any]:
    try:
        if op == "check":
            templates.check(parts)
            return ("ok", None)
        return ("ok", templates.render(parts, variables))
    except TemplateVariableMissing as exc:
        return ("missing", exc.message)
    except TemplateInvalid as exc:
        return ("invalid", exc.message)
    except MemoryError:
        return ("memory", None)
    except RecursionError:
        return ("invalid", "The template cannot be rendered: it nests too deeply.")


def serve(conn: Connection, limits: Limits) -> None:
    """A worker process: limits first, then one job at a time until the pipe closes."""
    _limit_memory(limits.memory_bytes)
    conn.send(("ready", None))
    while True:
        try:
            op, parts, variables = conn.recv()
        except (EOFError, OSError):
            return
        _limit_cpu(limits.cpu_s)
        reply = _job(op, parts, variables)
        try:
            conn.send(reply)
        except MemoryError:
            return
        if reply[0] == "memory":
            return  # a heap that hit its limit is not trusted with the next job


class _Worker:
    def __init__(self, limits: Limits) -> None:
        parent, child = _SPAWN.Pipe()
        self.conn = parent
        self.jobs = 0
        self.process = _SPAWN.Process(
            target=serve, args=(child, limits), name="postroom-template", daemon=True
        )
        self.process.start()
        child.close()
        if not parent.poll(limits.start_s):
            self.kill()
            raise TemplateInvalid("Templates cannot be rendered right now (worker start).")
        parent.recv()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class TemplatePool:
    """A few worker processes per API process; `check` and `render` await one of them."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        # One thread per worker: a job waits here for its turn, off the event loop.
        self._threads = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="template")
        # Workers replaced after a limit or a crash (visible to tests and metrics).
        self.replaced = 0

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker(self.limits)

    def _give_back(self, worker: _Worker) -> None:
        if worker.jobs >= self.limits.jobs_per_worker or not worker.process.is_alive():
            worker.kill()
            return
        with self._lock:
            self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self.replaced += 1

    def run_blocking(self, op: str, parts: Parts, variables: dict[str, Any]) -> Any:
        worker = self._take()
        worker.jobs += 1
        try:
            worker.conn.send((op, parts, variables))
            if not worker.conn.poll(self.limits.wall_s):
                self._discard(worker)
                raise _over_limit(f"it takes more than {self.limits.wall_s:g} s")
            kind, value = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            # Ended by the kernel: RLIMIT_CPU (SIGXCPU), or out of memory while replying.
            self._discard(worker)
            raise _over_limit("it uses more than its share of CPU or memory") from None
        if kind == "memory":
            self._discard(worker)
            raise _over_limit("it uses more than its share of memory")
        self._give_back(worker)
        if kind == "missing":
            raise TemplateVariableMissing(value)
        if kind == "invalid":
            raise TemplateInvalid(value)
        return value

    async def run(self, op: str, parts: Parts, variables: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self.run_blocking, op, parts, variables)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


def _over_limit(why: str) -> TemplateInvalid:
    return TemplateInvalid(f"The template cannot be rendered: {why}.")


_pool: TemplatePool | None = None
_pool_lock = threading.Lock()


def pool() -> TemplatePool:
    """This process's pool, started on first use (workers start when a job needs one)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = TemplatePool()
        return _pool


async def check(parts: Parts) -> None:
    """templates.check in a worker process: 422 `template_invalid` when refused."""
    await pool().run("check", parts, {})


async def render(parts: Parts, variables: dict[str, Any]) -> Parts:
    """templates.render in a worker process: 422 when refused or a variable is missing."""
    result: Parts = await pool().run("render", parts, variables)
    return result
