"""`make deliver`: the outbound-events delivery process (services/tenant_events/deliverer.py).

Run as many as needed, on as many hosts: deliveries are claimed in PostgreSQL. SIGTERM or
SIGINT stops claiming, lets requests in flight finish (up to the webhook timeout) and
records them; anything left is due again for the other processes when its lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from database.engine import Database
from services.logs import configure_logging
from services.tenant_events.deliverer import Deliverer
from settings import Settings, get_settings
from worker.listener import raise_fd_limit


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db = Database.from_settings(settings, pool_size=5, max_overflow=5)
    deliverer = Deliverer(settings=settings, db=db)
    try:
        await deliverer.run(stop)
    finally:
        await deliverer.aclose()
        await db.dispose()


def main() -> None:
    settings = get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    # httpx logs every request with its URL at INFO: a tenant's URL may carry a token, and a
    # line per delivery is noise. Outcomes are in the attempt log and the metrics.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
