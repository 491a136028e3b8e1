"""Webhook ingest by group commit (issue 24 item 3): webhooks that arrive while a statement is
on its way share the next INSERT and one Redis script call; each is answered only after its
row committed; duplicates, a bad row, a full batch and a database cut behave as for one alone.

The event table is held with a lock (SHARE: reads pass, INSERTs wait) so that a first webhook's
statement stays on its way while the others queue behind it, as under load."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from tests.helpers import notification, post_webhook, wait_for
from tests.peers import RedisServer


@dataclass
class Api:
    app: Any
    client: httpx.AsyncClient
    redis_url: str

    @property
    def batcher(self) -> Any:
        return self.app.state.ingest_batcher


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis no worker reads: what the API publishes stays countable."""
    redis = RedisServer().start()
    try:
        yield redis
    finally:
        redis.stop()


@asynccontextmanager
async def serve(settings: Any, **overrides: Any) -> AsyncIterator[Api]:
    from api.app import create_app

    app = create_app(settings.model_copy(update=overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            yield Api(app, c, overrides.get("redis_url", settings.redis_url))


@pytest.fixture
async def api(settings: Any, private_redis: RedisServer) -> AsyncIterator[Api]:
    async with serve(settings, redis_url=private_redis.url) as a:
        # The first webhook loads the publisher's script and warms the connections.
        warm = await post_webhook(a.client, notification("message.created", {"id": "warm"}))
        assert warm.status_code == 200, warm.text
        await wait_for(lambda: queued_messages(a.redis_url), message="the warm-up's message")
        yield a


@asynccontextmanager
async def table_held(db: Any) -> AsyncIterator[None]:
    """INSERTs into `event` wait until the block ends (reads go on)."""
    async with db.engine.connect() as holder:
        await holder.execute(sa.text("BEGIN"))
        await holder.execute(sa.text("LOCK TABLE event IN SHARE MODE"))
        try:
            yield
        finally:
            await holder.execute(sa.text("ROLLBACK"))


async def queued_messages(redis_url: str) -> list[bytes]:
    """Every task message in the short lanes."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        return [
            m
            for key in [k async for k in r.scan_iter("short.*")]
            for m in await r.lrange(key, 0, -1)
        ]
    finally:
        await r.aclose()


async def script_calls(redis_url: str) -> int:
    """How many publisher script calls (EVALSHA) Redis has run."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        stats = await r.info("commandstats")
    finally:
        await r.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def stored_ids(db: Any, external_ids: list[str]) -> dict[str, str]:
    query = sa.text("SELECT external_id, id::text FROM event WHERE external_id = ANY(:ids)")
    async with db.engine.connect() as conn:
        return {e: i for e, i in (await conn.execute(query, {"ids": external_ids})).all()}


def post_all(api: Api, payloads: list[Any]) -> list[asyncio.Task[httpx.Response]]:
    return [asyncio.create_task(post_webhook(api.client, p)) for p in payloads]


async def statements_busy(
    api: Api, payload: Any
) -> tuple[asyncio.Task[httpx.Response], list[asyncio.Task[httpx.Response]]]:
    """Post `payload`, then fillers, one at a time, each going at once in a statement of its
    own, until every statement the batcher may have on its way is (waiting on the lock);
    the first's request and the fillers'."""
    tasks = []
    for i in range(api.batcher.statements):
        p = payload if i == 0 else notification("message.created", {"id": f"filler-{i}"})
        tasks.append(asyncio.create_task(post_webhook(api.client, p)))

        async def writing(n: int = i + 1) -> bool:
            return api.batcher.writing == n

        await wait_for(writing, message=f"{i + 1} statements on their way")
    return tasks[0], tasks[1:]


async def all_queued(api: Api, n: int) -> None:
    async def queued() -> bool:
        return api.batcher.queued == n

    await wait_for(queued, message=f"{n} webhooks queued behind the statement on its way")


async def test_webhooks_arriving_together_share_one_insert_and_are_answered_after_commit(
    api: Api, db: Any
) -> None:
    calls = await script_calls(api.redis_url)
    before = len(await queued_messages(api.redis_url))
    batches = api.batcher.stats.batches
    first = notification("message.created", {"id": "gc-first"}, grant_id="g-gc")
    rest = [notification("message.created", {"id": f"gc-{i}"}, grant_id="g-gc") for i in range(20)]
    ids = [p["id"] for p in [first, *rest]]
    async with table_held(db):
        lead, fillers = await statements_busy(api, first)
        others = post_all(api, rest)
        await all_queued(api, 20)
        await asyncio.sleep(0.3)
        # Not one answer while no row can commit: each waits for its own row's commit.
        assert not any(t.done() for t in [lead, *fillers, *others])
        assert await stored_ids(db, ids) == {}
    answers = [await lead, *await asyncio.gather(*others)]
    assert all(r.status_code == 200 for r in await asyncio.gather(*fillers))
    assert [r.status_code for r in answers] == [200] * 21, [r.text for r in answers]
    assert Counter(r.json()["status"] for r in answers) == {"queued": 21}
    # The first ones went alone, at once (one per statement allowed on its way at a time);
    # the twenty that arrived meanwhile went together in one INSERT.
    busy = api.batcher.statements
    assert api.batcher.stats.sizes[batches:] == [1] * busy + [20]
    stored = await stored_ids(db, ids)
    assert {stored[p["id"]] for p in [first, *rest]} == {r.json()["event_id"] for r in answers}

    async def published() -> list[bytes] | None:
        found = await queued_messages(api.redis_url)
        return found if len(found) - before == 21 + busy - 1 else None

    messages = await wait_for(published, message="a task message per stored row")
    for event_id in stored.values():
        assert sum(event_id.encode() in m for m in messages) == 1
    # One script call per batch at most (batches close together may even share one).
    assert 1 <= await script_calls(api.redis_url) - calls <= busy + 1


async def test_a_lone_webhook_is_written_at_once_in_a_statement_of_its_own(
    api: Api, db: Any
) -> None:
    batches = api.batcher.stats.batches
    for i in range(10):
        r = await post_webhook(api.client, notification("message.created", {"id": f"lone-{i}"}))
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    # Nobody waited for company: ten webhooks, ten statements of one row.
    assert api.batcher.stats.sizes[batches:] == [1] * 10


async def test_repeats_inside_one_batch_and_across_batches_answer_duplicate_and_enqueue_nothing(
    api: Api, db: Any
) -> None:
    before = len(await queued_messages(api.redis_url))
    across = notification("message.created", {"id": "dup-across"}, grant_id="g-dup")
    inside = notification("message.created", {"id": "dup-inside"}, grant_id="g-dup")
    others = [notification("message.created", {"id": f"dup-o{i}"}) for i in range(4)]
    batches = api.batcher.stats.batches
    async with table_held(db):
        lead, fillers = await statements_busy(api, across)
        # One batch: the first's notification again, three copies of another, four others.
        waiting = post_all(api, [across, inside, inside, *others, inside])
        await all_queued(api, 8)
    first = await lead
    answers = await asyncio.gather(*waiting)
    await asyncio.gather(*fillers)
    busy = api.batcher.statements
    assert api.batcher.stats.sizes[batches:] == [1] * busy + [8]
    assert first.json()["status"] == "queued"
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    by_status = Counter(r.json()["status"] for r in answers)
    assert by_status == {"duplicate": 3, "queued": 5}, by_status
    # Across batches: the repeat of the committed row is answered with the row's id.
    assert answers[0].json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    # Inside one batch: the first copy is stored, the others are answered as its duplicates.
    copies = [answers[i].json() for i in (1, 2, 7)]
    assert sorted(c["status"] for c in copies) == ["duplicate", "duplicate", "queued"]
    assert len({c["event_id"] for c in copies}) == 1
    stored = await stored_ids(db, [across["id"], inside["id"]])
    assert stored == {across["id"]: first.json()["event_id"], inside["id"]: copies[0]["event_id"]}

    async def published() -> list[bytes] | None:
        found = await queued_messages(api.redis_url)
        return found if len(found) - before >= 6 + busy - 1 else None

    messages = await wait_for(published, message="a task message per stored row")
    await asyncio.sleep(0.2)  # nothing more follows
    messages = await queued_messages(api.redis_url)
    # One per stored row (the fillers' too), none for a duplicate.
    assert len(messages) - before == 6 + busy - 1
    for event_id in stored.values():
        assert sum(event_id.encode() in m for m in messages) == 1

    again = await post_webhook(api.client, inside)
    assert again.json() == {"status": "duplicate", "event_id": stored[inside["id"]]}


async def test_a_row_the_database_refuses_fails_alone(api: Api, db: Any) -> None:
    bad = (
        b'{"id": "gc-nul", "type": "message.created", "data": {"object": {"subject": "a\\u0000b"}}}'
    )
    good = [notification("message.created", {"id": f"gc-good-{i}"}) for i in range(5)]
    split = api.batcher.stats.split
    async with table_held(db):
        lead, fillers = await statements_busy(
            api, notification("message.created", {"id": "gc-lead"})
        )
        waiting = post_all(api, [good[0], good[1], bad, *good[2:]])
        await all_queued(api, 6)
    assert [r.status_code for r in [await lead, *await asyncio.gather(*fillers)]] == [200] * (
        api.batcher.statements
    )
    answers = await asyncio.gather(*waiting)
    codes = [r.status_code for r in answers]
    assert codes == [200, 200, 400, 200, 200, 200], [r.text for r in answers]
    assert answers[2].json()["error"]["code"] == "bad_request"
    assert api.batcher.stats.split == split + 1  # the batch went row by row
    stored = await stored_ids(db, [p["id"] for p in good] + ["gc-nul"])
    assert sorted(stored) == sorted(p["id"] for p in good)


async def test_a_batch_holds_at_most_the_configured_number_of_rows(
    settings: Any, private_redis: RedisServer, db: Any
) -> None:
    payloads = [notification("message.created", {"id": f"cap-{i}"}) for i in range(11)]
    async with serve(settings, redis_url=private_redis.url, webhook_batch_max=4) as api:
        async with table_held(db):
            lead, fillers = await statements_busy(api, payloads[0])
            waiting = post_all(api, payloads[1:])
            await all_queued(api, 10)
        answers = [await lead, *await asyncio.gather(*fillers, *waiting)]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        busy = api.batcher.statements
        sizes = api.batcher.stats.sizes
        # The ten queued went four at a time at most, by whichever statement came back first.
        assert sizes[:busy] == [1] * busy and sum(sizes[busy:]) == 10
        assert api.batcher.stats.largest == 4 and sizes[busy : busy + 2] == [4, 4]
    assert len(await stored_ids(db, [p["id"] for p in payloads])) == 11


async def test_broker_down_after_commit_still_answers_200_and_keeps_every_row(
    settings: Any, db: Any
) -> None:
    from tests.peers import free_port

    down = f"redis://127.0.0.1:{free_port()}/0"
    async with serve(settings, redis_url=down, publish_timeout_s=0.2) as api:
        payloads = [notification("message.created", {"id": f"nobroker-{i}"}) for i in range(10)]
        started = time.monotonic()
        answers = await asyncio.gather(*post_all(api, payloads))
        took = time.monotonic() - started
    assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers]
    assert {r.json()["status"] for r in answers} == {"queued"}
    assert took < 2.0, took
    stored = await stored_ids(db, [p["id"] for p in payloads])
    assert len(stored) == 10  # received, for the outbox sweeper to publish


class CutProxy:
    """A TCP hop to PostgreSQL that can be cut: every connection through it is closed at once
    and new ones are refused, as when the database host dies; until restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_off = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self.cut_off = True
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


async def test_database_cut_mid_batch_answers_503_to_those_waiting_and_loses_no_acknowledged_row(
    settings: Any, private_redis: RedisServer, db: Any
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    proxy = CutProxy(url.port or 5432)
    port = await proxy.start()
    proxied = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    run = uuid.uuid4().hex[:8]
    acked_before = [
        notification("message.created", {"id": f"cut-a{i}"}, nid=f"cut-{run}-a{i}")
        for i in range(5)
    ]
    cut_lead = notification("message.created", {"id": "cut-lead"}, nid=f"cut-{run}-lead")
    caught = [
        notification("message.created", {"id": f"cut-c{i}"}, nid=f"cut-{run}-c{i}")
        for i in range(10)
    ]
    async with serve(
        settings, database_url=proxied, redis_url=private_redis.url, webhook_db_deadline_s=10.0
    ) as api:
        answered = await asyncio.gather(*post_all(api, acked_before))
        assert [r.status_code for r in answered] == [200] * 5
        async with table_held(db):
            lead, fillers = await statements_busy(api, cut_lead)
            waiting = post_all(api, caught)
            await all_queued(api, 10)
            started = time.monotonic()
            proxy.cut()
            answers = [await lead, *await asyncio.gather(*waiting)]
            took = time.monotonic() - started
            await asyncio.gather(*fillers)
        # Those waiting are told at once (not at the 10 s deadline) to retry later.
        assert [r.status_code for r in answers] == [503] * 11, [r.text for r in answers]
        assert {r.json()["error"]["code"] for r in answers} == {"service_unavailable"}
        assert took < 3.0, took

        proxy.cut_off = False
        # Nylas retries the 503s: each is then stored once. The cut statement may have
        # committed after all (its server session outlived the client): then `duplicate`.
        for payload in [cut_lead, *caught]:
            for _ in range(30):
                r = await post_webhook(api.client, payload)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200, r.text
            assert r.json()["status"] in ("queued", "duplicate")
    stored = await stored_ids(db, [p["id"] for p in [*acked_before, cut_lead, *caught]])
    # Every webhook ever answered 200 has its row, with the id it was answered with.
    assert {p["id"]: stored[p["id"]] for p in acked_before} == {
        p["id"]: r.json()["event_id"] for p, r in zip(acked_before, answered, strict=True)
    }
    assert len(stored) == 16
    assert proxy.server is not None
    proxy.server.close()
