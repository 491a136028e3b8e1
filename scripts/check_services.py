"""Stop at once, with one sentence, when PostgreSQL or Redis is not reachable."""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

sys.path.insert(0, ".")
from settings import get_settings

HINTS = {
    "PostgreSQL": "start it (here: pg_ctlcluster --skip-systemctl-redirect "
    "$(ls /etc/postgresql) main start) "
    "or point POSTROOM_DATABASE_URL at one",
    "Redis": "start it (here: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '') "
    "or point POSTROOM_REDIS_URL at one",
}


async def reachable(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def main() -> int:
    s = get_settings()
    db = urlsplit(s.database_url.replace("+asyncpg", ""))
    rd = urlsplit(s.redis_url)
    checks = [
        ("PostgreSQL", db.hostname or "127.0.0.1", db.port or 5432),
        ("Redis", rd.hostname or "127.0.0.1", rd.port or 6379),
    ]
    failed = 0
    for name, host, port in checks:
        if not await reachable(host, port):
            print(f"{name} is not reachable at {host}:{port}: {HINTS[name]}.", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
