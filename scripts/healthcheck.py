"""Container health checks (docker/compose.yml): exit 0 when healthy, 1 with one line if not.

python scripts/healthcheck.py api        GET /health/ready on this container
python scripts/healthcheck.py worker     this container's Celery worker answers a ping
python scripts/healthcheck.py beat       some beat holds the leader lease in Redis
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from settings import get_settings


def check_api() -> str | None:
    port = os.environ.get("PORT", "8000")
    url = f"http://127.0.0.1:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as r:
            return None if r.status == 200 else f"{url} answered {r.status}"
    except OSError as exc:
        return f"{url} failed: {type(exc).__name__}"


def check_worker() -> str | None:
    from worker.app import celery_app

    # Worker names end in @<hostname> (-n sync@%h); a container's hostname is its id.
    suffix = "@" + socket.gethostname()
    replies = celery_app.control.ping(timeout=3.0) or []
    names = [name for reply in replies for name in reply]
    return None if any(n.endswith(suffix) for n in names) else f"no worker{suffix} answered"


def check_beat() -> str | None:
    import redis

    from worker.beat_lock import LOCK_KEY

    client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=3)
    return None if client.exists(LOCK_KEY) else "no beat holds the leader lease"


CHECKS = {"api": check_api, "worker": check_worker, "beat": check_beat}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        print(f"usage: healthcheck.py {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    try:
        problem = CHECKS[sys.argv[1]]()
    except Exception as exc:
        problem = f"{sys.argv[1]} check failed: {type(exc).__name__}"
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
