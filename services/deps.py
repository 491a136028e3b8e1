"""`Deps`: what a service run by a task needs of the worker's runtime (worker.runtime.Runtime
fits it); services import nothing of worker."""

from __future__ import annotations

from typing import Any, Protocol

from database.engine import Database
from settings import Settings


class Deps(Protocol):
    @property
    def db(self) -> Database: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def nylas(self) -> Any: ...
