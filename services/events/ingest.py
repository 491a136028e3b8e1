"""Webhook ingest: verify, parse and store a Nylas notification exactly once.

Many webhooks share one INSERT (group commit, `IngestBatcher`): each request verifies and
parses its notification on its own, then waits while its row goes to PostgreSQL with the
others that arrived meanwhile, in one autocommit statement (one WAL flush), and is answered
only once that statement has returned, i.e. committed. No request waits for a timer: one
arriving while fewer than `statements` (4) are on their way is written at once, alone; the
ones that arrive while all are busy go together in the next. The batch's task messages then
go to Redis together, in one script call (worker.dispatch.AsyncPublisher.publish_many).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import asyncpg
import structlog

from database.models import EventSource
from database.repositories.events import rows as events_repo
from database.repositories.events.rows import WebhookRow
from database.task_names import TaskName
from services import metrics
from services.errors import BadRequest
from services.events.unit_of_work import Job
from services.events.webhooks import (
    check_time_window,
    decompress,
    parse_notification,
    verify_signature,
)

log = structlog.get_logger(__name__)

UNTRANSLATABLE_CHARACTER = "22P05"
# A statement error that one row can cause (bad data, a constraint, a deadlock between two
# batches): the batch's rows are then written one at a time, so only the culprit fails.
# Anything else (connection trouble, a restart, a statement timeout) is every row's.
_ROW_SQLSTATE_CLASSES = ("22", "23", "40", "54")


@dataclass(frozen=True)
class Ingested:
    event_id: uuid.UUID | None
    task_id: str
    created: bool
    type: str
    # The grant the notification names: its lane until the worker learns the tenant.
    lane_key: str | None = None
    request_id: str | None = None
    # The batch that stored it hands its task message to the publisher itself.
    published: bool = False
    # Done once that batch's publish has finished (whether it went or failed: the outbox).
    publish_done: asyncio.Future[None] | None = field(default=None, compare=False, repr=False)

    async def published_by_batch(self) -> None:
        """Wait until the batch's publish of this row has finished (shared: not cancelled
        for the others when this caller is)."""
        if self.publish_done is not None:
            await asyncio.wait((self.publish_done,))

    @property
    def job(self) -> Job | None:
        """What the caller publishes once stored: only a notification seen for the first
        time, and only when no IngestBatcher publishes it with its batch."""
        if self.published:
            return None
        return self.task()

    def task(self) -> Job | None:
        """The task message of a notification stored for the first time."""
        if not self.created or self.event_id is None:
            return None
        return Job(
            TaskName.process_event,
            self.event_id,
            self.task_id,
            request_id=self.request_id,
            lane=self.lane_key,
        )


async def ingest_nylas(
    store: asyncpg.Pool | IngestBatcher,
    *,
    raw: bytes,
    signature: str | None,
    content_encoding: str | None,
    secret: str,
    max_bytes: int,
    stale_after_s: float,
    max_age_s: int,
    request_id: str | None = None,
) -> Ingested:
    """Verify the signature over the exact bytes, then INSERT ... ON CONFLICT DO NOTHING.

    Nothing is written unless the signature matches. `store` is an IngestBatcher (the API's:
    the row goes with the others' in one statement, and the batch publishes) or the driver
    pool itself (database.engine.driver_pool: one statement of its own; the caller
    publishes `Ingested.job`). Either way the row is committed when this returns.
    """
    verify_signature(secret, raw, signature)
    body = decompress(raw, content_encoding, limit=max_bytes)
    notification = parse_notification(body)
    check_time_window(notification.body, now=time.time(), max_age_s=max_age_s)
    data = notification.body.get("data")
    grant = data.get("grant_id") if isinstance(data, dict) else None
    row = WebhookRow(
        event_id=uuid.uuid4(),
        type=notification.type,
        external_id=notification.id,
        task_id=str(uuid.uuid4()),
        # parse_notification() decoded it as UTF-8 JSON already, so this cannot fail.
        payload_json=body.decode(),
        request_id=request_id,
        stale_after_s=stale_after_s,
    )
    lane = grant if isinstance(grant, str) else None
    try:
        if isinstance(store, IngestBatcher):
            return await store.store(row, lane_key=lane)
        [ingested] = await store_rows(store, [row], [lane])
        return ingested
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) != UNTRANSLATABLE_CHARACTER:
            raise
        # \u0000 has no place in jsonb.
        raise BadRequest("The body contains a NUL character (\\u0000).") from None


async def store_rows(
    pool: asyncpg.Pool, rows: Sequence[WebhookRow], lanes: Sequence[str | None]
) -> list[Ingested]:
    """Write the rows in one autocommit statement; what each became, in their order.

    The rows must have distinct external ids (IngestBatcher answers a repeat from its first).
    A duplicate of a row stored before is looked up on the same connection afterwards.
    """
    async with events_repo.webhook_connection(pool) as conn:
        created = await events_repo.insert_webhook_events(
            conn, source=EventSource.nylas, task_name=TaskName.process_event, rows=rows
        )
        missing = [r.external_id for r in rows if r.event_id not in created]
        existing = (
            await events_repo.webhook_event_ids(conn, EventSource.nylas, missing) if missing else {}
        )
    return [
        Ingested(
            event_id=r.event_id,
            task_id=r.task_id,
            created=True,
            type=r.type,
            lane_key=lane,
            request_id=r.request_id,
        )
        if r.event_id in created
        else Ingested(
            event_id=existing.get(r.external_id), task_id=r.task_id, created=False, type=r.type
        )
        for r, lane in zip(rows, lanes, strict=True)
    ]


def _row_error(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate.startswith(_ROW_SQLSTATE_CLASSES)


PublishMany = Callable[[list[Job]], Awaitable[object]]


@dataclass(eq=False)
class _Waiting:
    row: WebhookRow
    lane: str | None
    answer: asyncio.Future[Ingested]
    batch: _Batch | None = None  # the statement carrying it, once one does


@dataclass(eq=False)
class _Batch:
    """The rows of one statement on its way, and the flusher task writing them."""

    waiting: list[_Waiting]
    flusher: asyncio.Task[None]
    abandoned: bool = False


@dataclass
class BatchStats:
    """What the batcher did so far (one API process): the bench and the tests read it."""

    batches: int = 0
    rows: int = 0
    largest: int = 0
    split: int = 0
    sizes: list[int] = field(default_factory=list)


class IngestBatcher:
    """Group commit of webhook rows: one INSERT and one publish for many webhooks.

    `store()` queues a row and waits for its outcome. At most `statements` INSERTs are on
    their way at once per process, each written by a flusher task: a row arriving while
    fewer are is written at once (alone, when nothing else is queued); the rows arriving
    while all are busy (up to `max_batch`) go together in the next one a flusher sends. No
    timer: nobody waits for company. A request is answered once the statement carrying its
    row has returned: committed, or an error for it (503 when the database is unavailable).
    A row whose data the database refuses fails alone: the batch is then written row by
    row. Repeats of one notification id within a batch are answered `duplicate` of the
    first. A waiter that gives up (its deadline) leaves the batch; when the last waiter of a
    statement on its way has given up, that statement is cancelled, as a lone webhook's
    was; one that commits anyway is answered `duplicate` on Nylas's retry, and published by
    the batch or else by the outbox sweeper.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 64,
        statements: int = 4,
        deadline_s: float = 3.0,
        publish: PublishMany | None = None,
    ) -> None:
        self.pool = pool
        self.max_batch = max(1, max_batch)
        self.statements = max(1, statements)
        self.deadline_s = deadline_s
        self.publish = publish
        self.stats = BatchStats()
        self._queue: deque[_Waiting] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        self._batches: set[_Batch] = set()
        self._publishing: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Rows waiting for a statement."""
        return len(self._queue)

    @property
    def writing(self) -> int:
        """Rows in the statements on their way (0: none is)."""
        return sum(len(b.waiting) for b in self._batches)

    async def store(self, row: WebhookRow, *, lane_key: str | None = None) -> Ingested:
        """Queue the row for the next statement; its outcome once that has committed."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(row, lane_key, loop.create_future())
        self._queue.append(waiting)
        # A flusher of a torn-down loop (never cancelled) will never run again: forget it.
        stale = {t for t in self._flushers if t.done() or t.get_loop() is not loop}
        self._flushers -= stale
        # The flushers that are busy take what is queued when their statement returns; only
        # one more is started per row, and only while fewer than `statements` exist.
        if len(self._flushers) < self.statements:
            # A context of its own: not this request's (its request id in log lines).
            task = loop.create_task(self._run(), context=contextvars.Context())
            self._flushers.add(task)
        try:
            return await waiting.answer
        except asyncio.CancelledError:
            self._gave_up(waiting)
            raise

    def _gave_up(self, waiting: _Waiting) -> None:
        """A waiter's deadline passed: cancel its statement if no one else waits for it."""
        batch = waiting.batch
        if batch is None or batch.abandoned or batch not in self._batches:
            return  # still queued: a flusher skips it
        if all(w.answer.done() for w in batch.waiting):
            batch.abandoned = True
            batch.flusher.cancel()

    async def _run(self) -> None:
        """Write what is queued, one statement (or a split batch) at a time, until nothing is."""
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None
        try:
            while self._queue:
                rows: list[_Waiting] = []
                while self._queue and len(rows) < self.max_batch:
                    w = self._queue.popleft()
                    # A done one gave up; one of a torn-down loop has no one waiting.
                    if not w.answer.done() and w.answer.get_loop() is loop:
                        rows.append(w)
                if not rows:
                    continue
                batch = _Batch(rows, current)
                for w in rows:
                    w.batch = batch
                self._batches.add(batch)
                try:
                    await self._flush(rows)
                except asyncio.CancelledError:
                    # Only the statement was given up, not the flusher (unless it was too).
                    if not batch.abandoned or current.uncancel() > 0:
                        raise
                finally:
                    self._batches.discard(batch)
                    for w in rows:
                        if not w.answer.done():  # a flusher's own bug must not hang anyone
                            w.answer.set_exception(RuntimeError("webhook batch not written"))
        finally:
            self._flushers.discard(current)

    async def _flush(self, batch: list[_Waiting]) -> None:
        first: dict[str, _Waiting] = {}
        repeats: list[_Waiting] = []
        for w in batch:
            if w.row.external_id in first:
                repeats.append(w)
            else:
                first[w.row.external_id] = w
        # One order for every batch: two batches sharing ids wait, they do not deadlock.
        ordered = sorted(first.values(), key=lambda w: w.row.external_id)
        self._count(len(batch))
        jobs: list[Job] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.deadline_s):
                try:
                    stored = await store_rows(
                        self.pool, [w.row for w in ordered], [w.lane for w in ordered]
                    )
                except asyncpg.PostgresError as exc:
                    if len(batch) == 1 or not _row_error(exc):
                        raise
                    self.stats.split += 1
                    log.warning("webhook_batch_split", rows=len(batch), sqlstate=exc.sqlstate)
                    await self._one_by_one(batch, jobs, done)
                    return
            outcome = {w.row.external_id: i for w, i in zip(ordered, stored, strict=True)}
            for w in ordered:
                self._answer(w, outcome[w.row.external_id], jobs, done)
            for w in repeats:
                stored_first = outcome[w.row.external_id]
                self._answer(
                    w,
                    Ingested(
                        event_id=stored_first.event_id,
                        task_id=w.row.task_id,
                        created=False,
                        type=w.row.type,
                    ),
                    jobs,
                    done,
                )
        except Exception as exc:
            for w in batch:
                if not w.answer.done():
                    w.answer.set_exception(exc)
        finally:
            self._publish(jobs, done)

    async def _one_by_one(
        self, batch: list[_Waiting], jobs: list[Job], done: asyncio.Future[None]
    ) -> None:
        """Each row in a statement of its own, in arrival order: only a bad row fails."""
        for w in batch:
            try:
                [ingested] = await store_rows(self.pool, [w.row], [w.lane])
            except asyncpg.PostgresError as exc:
                if not _row_error(exc):
                    raise
                if not w.answer.done():
                    w.answer.set_exception(exc)
                continue
            self._answer(w, ingested, jobs, done)

    def _answer(
        self, w: _Waiting, ingested: Ingested, jobs: list[Job], done: asyncio.Future[None]
    ) -> None:
        job = ingested.task()
        if job is not None and self.publish is not None:
            jobs.append(job)  # even for a waiter gone meanwhile: its row is committed
            ingested = replace(ingested, published=True, publish_done=done)
        if not w.answer.done():
            w.answer.set_result(ingested)

    def _count(self, size: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += size
        stats.largest = max(stats.largest, size)
        if len(stats.sizes) < 10_000:
            stats.sizes.append(size)
        metrics.WEBHOOK_BATCH_ROWS.observe(size)

    def _publish(self, jobs: list[Job], done: asyncio.Future[None]) -> None:
        """Hand the batch's task messages to the publisher together, without waiting."""
        if not jobs or self.publish is None:
            done.set_result(None)
            return
        task = asyncio.get_running_loop().create_task(self._publish_now(jobs, done))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_now(self, jobs: list[Job], done: asyncio.Future[None]) -> None:
        assert self.publish is not None
        try:
            await self.publish(jobs)
        except Exception as exc:  # the rows are committed: the outbox sweeper publishes them
            log.warning("publish_failed", events=len(jobs), error=type(exc).__name__)
        finally:
            if not done.done():
                done.set_result(None)

    async def close(self) -> None:
        """Let the statement on its way and the publishes finish (each is bounded)."""
        loop = asyncio.get_running_loop()
        pending = [
            t for t in (*self._flushers, *self._publishing) if t.get_loop() is loop and not t.done()
        ]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
