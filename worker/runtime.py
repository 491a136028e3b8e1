"""Per-process resources of a worker: an event loop, the database, the Nylas client.

Made once in each prefork child (`worker_process_init`), never per task, and lazily in
processes that do not fire that signal (solo pool, beat, tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from celery.signals import worker_process_init, worker_process_shutdown

from database.engine import Database
from services.logs import configure_logging
from services.nylas.budget import NylasBudget
from services.nylas.gateway import NylasGateway
from settings import Settings, get_settings

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    db: Database
    _nylas: NylasGateway | None = field(default=None)

    @property
    def nylas(self) -> NylasGateway | None:
        if self._nylas is None and self.settings.nylas_api_key is not None:
            self._nylas = NylasGateway(
                api_key=self.settings.nylas_api_key.get_secret_value(),
                api_uri=self.settings.nylas_api_uri,
                timeout=self.settings.nylas_timeout_s,
                budget=NylasBudget.from_settings(self.settings),
            )
        return self._nylas

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


_runtime: Runtime | None = None


def init_runtime(settings: Settings | None = None) -> Runtime:
    global _runtime
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # A worker process runs one task at a time: a small pool is plenty.
    _runtime = Runtime(
        settings=settings, loop=loop, db=Database.from_settings(settings, pool_size=2)
    )
    return _runtime


def runtime() -> Runtime:
    return _runtime if _runtime is not None else init_runtime()


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    init_runtime()


@worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    global _runtime
    if _runtime is not None:
        try:
            _runtime.run(_runtime.db.dispose())
        finally:
            _runtime.loop.close()
            _runtime = None
