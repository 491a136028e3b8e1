"""The failure policy every task uses: what is transient, how long to wait, when to give up."""

from __future__ import annotations

import random

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import exc as sa_exc

from services.errors import PostroomError, database_gone, transaction_rolled_back
from settings import Settings


def is_transient(exc: BaseException) -> bool:
    """Network trouble, timeouts, provider 429/5xx, SMTP 4xx, database disconnects."""
    if isinstance(exc, PostroomError):
        return exc.transient
    if isinstance(exc, SoftTimeLimitExceeded):
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # A restarting server answers "not yet accepting connections" (57P03), wrapped in a
        # plain DBAPIError: look at the driver's SQLSTATE, not only at the wrapper's class.
        # A deadlock (possible since thread rows are shared by a conversation's messages)
        # rolled the whole transaction back: retrying it is safe.
        return (
            bool(exc.connection_invalidated)
            or database_gone(exc.orig)
            or transaction_rolled_back(exc.orig)
        )
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # asyncpg's own connection errors when they escape SQLAlchemy's wrapping.
    return type(exc).__name__ in {
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "InterfaceError",
    }


def retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, (int, float)) else None


def backoff_s(attempt: int, settings: Settings, *, hint: float | None = None) -> float:
    """Full-jitter exponential backoff (base 5 s, factor 2, cap 600 s); longer Retry-After wins."""
    ceiling = min(
        settings.retry_cap_s, settings.retry_base_s * settings.retry_factor ** max(attempt - 1, 0)
    )
    delay = random.uniform(0, ceiling)
    if hint is not None:
        delay = max(delay, min(hint, settings.retry_cap_s))
    return round(delay, 3)
