"""What one attempt's answer means for its delivery (API.md "Outbound events"):

- any 2xx: delivered;
- 410 Gone: failed, and the endpoint is disabled at once;
- anything else (3xx included: redirects are not followed), a timeout or no connection:
  retried after the schedule's next wait, with full jitter (uniform in [0, wait]); a 429 or
  503 with `Retry-After` waits at least that; when the schedule has run out, failed.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from database.models import WebhookDeliveryStatus

# A Retry-After longer than this is taken as this (a receiver cannot park a delivery for weeks).
MAX_RETRY_AFTER_S = 86400.0


@dataclass(frozen=True)
class Verdict:
    status: WebhookDeliveryStatus
    next_attempt_at: datetime | None
    gone: bool = False


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


def judge(
    *,
    status_code: int | None,
    retry_after: str | None,
    attempts_before: int,
    delays: list[float],
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Verdict:
    """The verdict on attempt number `attempts_before + 1` of a delivery."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict(WebhookDeliveryStatus.succeeded, None)
    if status_code == 410:
        return Verdict(WebhookDeliveryStatus.failed, None, gone=True)
    if attempts_before >= len(delays):
        return Verdict(WebhookDeliveryStatus.failed, None)
    wait = delays[attempts_before] * rand()
    if status_code in (429, 503):
        asked = retry_after_s(retry_after, now)
        if asked is not None:
            wait = max(wait, asked)
    return Verdict(WebhookDeliveryStatus.retrying, now + timedelta(seconds=wait))
