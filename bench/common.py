"""What the benchmarks share: a scratch database, migrated, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

from tests.peers import migrate


def database_url(name: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@contextlib.contextmanager
def scratch_database(prefix: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Create and migrate `<prefix>_<pid>`, yield its name, drop it on the way out."""
    name = f"{prefix}_{os.getpid()}"
    migrate({**(env or os.environ), "POSTROOM_DATABASE_URL": database_url(name)})
    try:
        yield name
    finally:
        subprocess.run(
            [
                "psql",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-c",
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                "postgres",
            ],
            check=False,
            capture_output=True,
        )
