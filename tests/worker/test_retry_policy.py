"""The failure policy through a real worker: transient provider errors retry with backoff,
permanent ones dead-letter at once, and a replay after the fix succeeds with the history kept."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from database.models import Event
from services.errors import ProviderNotFound, ProviderTemporaryError
from services.events import dead_letters as dlq
from services.events.dead_letters import scrub
from tests.factories import create_nylas_account
from tests.fakes.nylas_server import make_message
from tests.helpers import notification, post_webhook, wait_for
from worker import dispatch, policy
from worker.execution import retries_used

pytestmark = pytest.mark.usefixtures("worker")


async def load(db: Any, event_id: str) -> Event:
    async with db.sessionmaker() as s:
        event = await s.get(Event, uuid.UUID(event_id))
        assert event is not None
        return event


async def finished(db: Any, event_id: str) -> Event | None:
    event = await load(db, event_id)
    return event if event.status in ("succeeded", "ignored", "dead") else None


async def send_truncated(client: Any, db: Any, grant: str, message_id: str) -> str:
    payload = notification("message.created.truncated", {"id": message_id}, grant_id=grant)
    r = await post_webhook(client, payload)
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    return str(r.json()["event_id"])


def gap_s(history: list[dict[str, Any]], i: int) -> float:
    """Seconds between the end of attempt i and the start of attempt i + 1."""
    end = datetime.fromisoformat(history[i]["finished_at"])
    start = datetime.fromisoformat(history[i + 1]["started_at"])
    return (start - end).total_seconds()


# -- the policy itself -------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling(settings: Any) -> None:
    for attempt in range(1, 12):
        ceiling = min(settings.retry_cap_s, settings.retry_base_s * 2 ** (attempt - 1))
        delays = [policy.backoff_s(attempt, settings) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.5  # jitter spreads over the whole range


def test_production_backoff_is_base_5_factor_2_cap_600() -> None:
    from settings import Settings

    prod = Settings(retry_base_s=5, retry_factor=2, retry_cap_s=600)
    assert max(policy.backoff_s(1, prod) for _ in range(300)) <= 5
    assert max(policy.backoff_s(4, prod) for _ in range(300)) <= 40
    assert max(policy.backoff_s(20, prod) for _ in range(300)) <= 600
    # Retry-After wins when longer, and is capped too.
    assert policy.backoff_s(1, prod, hint=30) >= 30
    assert policy.backoff_s(1, prod, hint=10_000) == 600


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (SoftTimeLimitExceeded(), True),
        (ProviderTemporaryError("429", retry_after=3), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (ProviderNotFound("gone"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_or_permanent(exc: BaseException, transient: bool) -> None:
    assert policy.is_transient(exc) is transient


def test_a_restarting_database_is_transient() -> None:
    from sqlalchemy.exc import DBAPIError

    class NotYetAccepting(Exception):
        sqlstate = "57P03"

    wrapped = DBAPIError("INSERT ...", {}, NotYetAccepting("not yet accepting connections"))
    assert policy.is_transient(wrapped)
    assert not policy.is_transient(DBAPIError("INSERT ...", {}, ValueError("bad value")))


async def test_a_statement_timeout_from_the_real_database_is_transient(db: Any) -> None:
    """A statement cancelled by statement_timeout rolled its transaction back: retry it (a sync
    waiting on its account's thread lock behind a slow batch hits this on a loaded host)."""
    import sqlalchemy as sa

    caught: BaseException | None = None
    try:
        async with db.transaction() as s:
            await s.execute(sa.text("SET LOCAL statement_timeout = 50"))
            await s.execute(sa.text("SELECT pg_sleep(2)"))
    except Exception as exc:
        caught = exc
    assert caught is not None, "statement_timeout did not cancel the statement"
    assert policy.is_transient(caught)
    # A constraint violation stays permanent: running it again gives the same answer.
    try:
        async with db.transaction() as s:
            await s.execute(sa.text("SELECT 1 / 0"))
    except Exception as exc:
        assert not policy.is_transient(exc)
    else:
        raise AssertionError("division by zero did not fail")


def test_dead_letter_arguments_are_scrubbed() -> None:
    kwargs = {"event_id": "e1", "smtp": {"password": "hunter2", "host": "h"}, "api_key": "k"}
    assert scrub(kwargs) == {
        "event_id": "e1",
        "smtp": {"password": "***", "host": "h"},
        "api_key": "***",
    }


def test_a_replay_grants_a_fresh_retry_budget() -> None:
    event = Event(
        source="nylas",
        type="t",
        task_name="x",
        attempts=8,
        history=[{"outcome": "dead"}, {"outcome": "replayed", "attempts_before": 6}],
    )
    assert retries_used(event) == 1


# -- through the worker --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "retry_after": 1},
        {"status": 503},
        {"status": 502, "html": True},
        {"status": 0, "delay": 6.5},  # longer than POSTROOM_NYLAS_TIMEOUT_S: a read timeout
    ],
    ids=["429-retry-after", "503", "html-502", "timeout"],
)
async def test_transient_provider_error_retries_then_succeeds(
    client: Any, db: Any, fake_nylas: Any, fault: dict[str, Any]
) -> None:
    account = await create_nylas_account(db)
    grant = account.grant_id
    assert grant is not None
    fake_nylas.put_message(grant, make_message(grant, "m-1", subject="after the storm"))
    fake_nylas.fail(r"/messages/m-1$", times=1, **fault)

    event_id = await send_truncated(client, db, grant, "m-1")
    event = await wait_for(partial(finished, db, event_id), timeout=30, message="event finished")

    assert event.status == "succeeded", event.last_error
    assert event.attempts == 2
    assert [h["outcome"] for h in event.history] == ["retrying", "succeeded"]
    assert event.history[0]["error"].startswith("ProviderTemporaryError")
    assert len(fake_nylas.requests_to(r"/messages/m-1$")) == 2
    if fault.get("retry_after"):
        assert gap_s(event.history, 0) >= 0.9  # Retry-After: 1 was honoured
    async with db.sessionmaker() as s:
        from sqlalchemy import text

        subjects = (
            (
                await s.execute(
                    text("SELECT subject FROM message WHERE account_id = :a"), {"a": account.id}
                )
            )
            .scalars()
            .all()
        )
    assert subjects == ["after the storm"]


async def test_retries_are_bounded_by_the_task_max_retries(
    client: Any, db: Any, fake_nylas: Any, settings: Any
) -> None:
    account = await create_nylas_account(db)
    grant = account.grant_id
    assert grant is not None
    fake_nylas.fail(r"/messages/m-2$", status=503, times=100)

    event_id = await send_truncated(client, db, grant, "m-2")
    event = await wait_for(partial(finished, db, event_id), timeout=40, message="event dead")

    assert event.status == "dead"
    assert event.attempts == 6  # postroom.events.process: 5 retries
    assert [h["outcome"] for h in event.history] == ["retrying"] * 5 + ["dead"]
    rows, _ = await dlq.list_page(db, tenant_id=account.tenant_id)
    assert len(rows) == 1 and rows[0].attempts == 6
    assert rows[0].exception_type == "ProviderTemporaryError"


async def test_permanent_error_dead_letters_then_replay_after_fix_succeeds(
    client: Any, db: Any, fake_nylas: Any, settings: Any
) -> None:
    account = await create_nylas_account(db)
    grant = account.grant_id
    assert grant is not None

    event_id = await send_truncated(client, db, grant, "m-404")  # Nylas answers 404
    event = await wait_for(partial(finished, db, event_id), timeout=20, message="event dead")
    assert event.status == "dead" and event.attempts == 1
    assert len(fake_nylas.requests_to(r"/messages/m-404$")) == 1  # no retry

    rows, _ = await dlq.list_page(db, tenant_id=account.tenant_id)
    assert len(rows) == 1
    dl = rows[0]
    assert dl.event_id == event.id and dl.tenant_id == account.tenant_id
    assert dl.task_name == "postroom.events.process"
    assert dl.exception_type == "ProviderNotFound"
    assert dl.exception_message
    assert dl.traceback and "Traceback" in dl.traceback
    assert dl.attempts == 1 and dl.kwargs == {"event_id": event_id}
    assert dl.replayed_at is None

    # The cause is fixed: the message now exists at the provider. Replay publishes for real.
    fake_nylas.put_message(grant, make_message(grant, "m-404", subject="found it"))
    from worker.app import make_celery

    publish = partial(dispatch.publish, make_celery(settings, publisher_only=True))
    job = await dlq.replay(db, dl.id, tenant_id=account.tenant_id, publish=publish)
    assert job.published and job.event_id == event.id

    async def succeeded() -> Event | None:
        e = await load(db, event_id)
        return e if e.status == "succeeded" else None

    event = await wait_for(succeeded, timeout=20, message="replayed event succeeded")
    assert event.attempts == 2
    assert [h["outcome"] for h in event.history] == ["dead", "replayed", "succeeded"]
    assert event.history[0]["error"].startswith("ProviderNotFound")
    assert job.task_id in event.task_ids and len(event.task_ids) == 2
    after = await dlq.show(db, dl.id, tenant_id=account.tenant_id)
    assert after.replayed_at is not None and after.replay_count == 1
