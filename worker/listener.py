"""`make watch`: the IMAP push listener process (services/imap/push.py).

SIGTERM or SIGINT closes every IDLE connection and releases the leases, so another listener
takes the accounts over at once instead of after the lease runs out.
"""

from __future__ import annotations

import asyncio
import resource
import signal

import redis.asyncio as aioredis

from database.engine import Database
from services.imap.push import Listener
from services.logs import configure_logging
from settings import Settings, get_settings
from worker.app import make_celery
from worker.dispatch import AsyncPublisher


def raise_fd_limit() -> None:
    """One socket per account: lift the soft open-files limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db = Database.from_settings(settings, pool_size=5, max_overflow=5)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    publisher = AsyncPublisher(
        make_celery(settings, publisher_only=True), settings.redis_url, timeout=2.0
    )
    try:
        await Listener(settings=settings, db=db, redis=redis, publisher=publisher).run(stop)
    finally:
        await publisher.close()
        await redis.aclose()
        await db.dispose()


def main() -> None:
    settings = get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    raise_fd_limit()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
