"""The feed's order under concurrent commits: seq is given after commit, so a reader paging with
`after` sees every event of its tenant exactly once, in order, whatever order the writers'
transactions commit in (the outbox pitfall a serial id at INSERT falls into)."""

from __future__ import annotations

import asyncio
import random
import uuid

from services.tenant_events.emit import TenantEventType, emit, emit_many
from services.tenant_events.feed import read_feed
from tests.factories import create_tenant


async def _page_all(db, tenant_id, after: int) -> tuple[list[dict], int]:
    items, after = await read_feed(db, tenant_id=tenant_id, after=after, limit=500)
    return items, after


async def test_a_reader_between_out_of_order_commits_misses_nothing(db) -> None:
    tenant = await create_tenant(db)
    first = db.sessionmaker()
    second = db.sessionmaker()
    try:
        await first.begin()
        id_first = await emit(
            first, tenant_id=tenant.id, type=TenantEventType.job_failed, data={"n": 1}
        )
        await second.begin()
        id_second = await emit(
            second, tenant_id=tenant.id, type=TenantEventType.job_failed, data={"n": 2}
        )
        await second.commit()  # the one that inserted second commits first

        seen, after = await _page_all(db, tenant.id, 0)
        assert [i["id"] for i in seen] == [str(id_second)]
        assert [i["seq"] for i in seen] == [1]

        await first.commit()  # the one that inserted first commits last
        more, after = await _page_all(db, tenant.id, after)
        assert [i["id"] for i in more] == [str(id_first)]
        assert [i["seq"] for i in more] == [2] and after == 2
        assert (await _page_all(db, tenant.id, after))[0] == []
    finally:
        await first.close()
        await second.close()


async def test_concurrent_writers_and_a_paging_reader_see_each_event_once_in_order(db) -> None:
    tenant = await create_tenant(db)
    writers, per_writer = 12, 5
    rng = random.Random(7)
    written: set[str] = set()

    async def writer(n: int) -> None:
        for k in range(per_writer):
            async with db.transaction() as s:
                event_id = await emit(
                    s, tenant_id=tenant.id, type=TenantEventType.job_failed, data={"w": n, "k": k}
                )
                # Held open a random while: later inserts of others commit before this one.
                await asyncio.sleep(rng.random() * 0.05)
            written.add(str(event_id))

    seen: list[dict] = []
    done = asyncio.Event()

    async def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            items, after = await _page_all(db, tenant.id, after)
            seen.extend(items)
            if finished and not items:
                return
            await asyncio.sleep(0.005)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    await reading

    ids = [i["id"] for i in seen]
    assert len(ids) == len(set(ids)) == writers * per_writer
    assert set(ids) == written
    assert [i["seq"] for i in seen] == list(range(1, writers * per_writer + 1))


async def test_the_feed_is_per_tenant(db) -> None:
    one, other = await create_tenant(db), await create_tenant(db)
    async with db.transaction() as s:
        await emit(s, tenant_id=one.id, type=TenantEventType.job_failed, data={"who": "one"})
        await emit(s, tenant_id=other.id, type=TenantEventType.job_failed, data={"who": "other"})
        await emit(s, tenant_id=one.id, type=TenantEventType.job_failed, data={"who": "one"})
    mine, _ = await _page_all(db, one.id, 0)
    theirs, _ = await _page_all(db, other.id, 0)
    assert [i["data"]["who"] for i in mine] == ["one", "one"]
    assert [i["seq"] for i in mine] == [1, 2]
    assert [i["data"]["who"] for i in theirs] == ["other"] and theirs[0]["seq"] == 1
    assert (await _page_all(db, uuid.uuid4(), 0))[0] == []


async def test_a_bulk_of_ten_thousand_events_is_numbered_and_read_in_order(db) -> None:
    tenant = await create_tenant(db)
    n = 10_000
    async with db.transaction() as s:  # as a bulk sync's batches write them: one statement
        await emit_many(
            s,
            tenant_id=tenant.id,
            events=[(TenantEventType.message_created, {"i": i}) for i in range(n)],
        )
    seen: list[dict] = []
    after = 0
    while len(seen) < n:
        items, after = await _page_all(db, tenant.id, after)
        assert items, f"the feed stopped after {len(seen)} of {n}"
        seen.extend(items)
    assert [e["seq"] for e in seen] == list(range(1, n + 1))
    assert sorted(e["data"]["i"] for e in seen) == list(range(n))


async def test_other_tenants_backlog_does_not_hide_a_readers_new_events(db) -> None:
    """With more unnumbered events of others than one numbering takes (no deliverer running),
    a reader's own newest events are still on its first page."""
    busy, reader = await create_tenant(db), await create_tenant(db)
    async with db.transaction() as s:
        await emit_many(
            s,
            tenant_id=busy.id,
            events=[(TenantEventType.job_failed, {"n": n}) for n in range(6_000)],
        )
    async with db.transaction() as s:
        mine = [
            await emit(s, tenant_id=reader.id, type=TenantEventType.job_failed, data={"k": k})
            for k in range(2)
        ]
    seen, after = await _page_all(db, reader.id, 0)
    assert [i["id"] for i in seen] == [str(m) for m in mine]
    assert [i["seq"] for i in seen] == [1, 2] and after == 2
    # The others are numbered by the next whole numbering (the deliverer's), in their order.
    seen_busy, _ = await _page_all(db, busy.id, 0)
    assert [i["seq"] for i in seen_busy] == list(range(1, 501))
