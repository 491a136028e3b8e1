"""Atomic claims on events: one run at a time, stale claims expire, retries keep their turn."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa

from database.models import Event, EventStatus
from database.repositories.events import rows as repo


async def new_event(db) -> uuid.UUID:
    event_id = uuid.uuid4()
    async with db.transaction() as s:
        created = await repo.insert_once(
            s,
            event_id=event_id,
            source="nylas",
            type="message.created",
            external_id=uuid.uuid4().hex,
            task_name="postroom.events.process",
            task_id="t0",
            payload={},
            stale_after_s=30,
        )
    assert created
    return event_id


async def claim(db, event_id, task_id, **kw):
    async with db.transaction() as s:
        return await repo.claim(
            s, event_id=event_id, task_id=task_id, lease_s=kw.pop("lease", 60), **kw
        )


async def test_only_one_of_two_concurrent_claims_wins(db) -> None:
    event_id = await new_event(db)
    results = await asyncio.gather(*(claim(db, event_id, f"t{i}") for i in range(5)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].attempts == 1


async def test_finished_event_cannot_be_claimed_again(db) -> None:
    event_id = await new_event(db)
    event = await claim(db, event_id, "t0")
    async with db.transaction() as s:
        assert await repo.finish(
            s, event=event, task_id="t0", status=EventStatus.succeeded, result={}
        )
    assert await claim(db, event_id, "t0") is None
    assert await claim(db, event_id, "t-other", redelivered=True) is None


async def test_expired_processing_claim_can_be_taken_over_and_the_old_run_loses(db) -> None:
    event_id = await new_event(db)
    old = await claim(db, event_id, "t-old", lease=0)
    await asyncio.sleep(0.01)
    new = await claim(db, event_id, "t-new")
    assert new is not None and new.attempts == 2
    async with db.transaction() as s:
        assert not await repo.finish(s, event=old, task_id="t-old", status=EventStatus.succeeded)


async def test_redelivered_copy_of_the_same_task_resumes_a_live_claim(db) -> None:
    event_id = await new_event(db)
    assert await claim(db, event_id, "t1") is not None
    assert await claim(db, event_id, "t1") is None  # a plain duplicate does nothing
    assert await claim(db, event_id, "t1", redelivered=True) is not None  # worker lost


async def test_retrying_event_waits_for_its_own_retry(db) -> None:
    event_id = await new_event(db)
    event = await claim(db, event_id, "t1")
    async with db.transaction() as s:
        await repo.finish(s, event=event, task_id="t1", status=EventStatus.retrying, retry_in_s=30)
    assert await claim(db, event_id, "someone-else") is None
    again = await claim(db, event_id, "t1")
    assert again is not None and again.attempts == 2
    assert [h["outcome"] for h in again.history] == ["retrying"]


async def test_sweeper_takes_due_events_once(empty_database, db) -> None:
    # The sweeper takes due events of every tenant: this test's must be the only ones.
    event_id = await new_event(db)
    async with db.transaction() as s:
        await s.execute(sa.update(Event).where(Event.id == event_id).values(due_at=sa.func.now()))
    async with db.transaction() as s:
        first = await repo.take_due(s, limit=10, stale_after_s=30)
    async with db.transaction() as s:
        second = await repo.take_due(s, limit=10, stale_after_s=30)
    assert [e.id for e in first] == [event_id]
    assert second == []
    assert first[0].status == "queued"
    assert first[0].current_task_id in first[0].task_ids


async def test_a_continued_event_stays_processing_and_only_its_next_part_takes_it(db) -> None:
    event_id = await new_event(db)
    first = await claim(db, event_id, "part-1")
    async with db.transaction() as s:
        assert await repo.continue_with(
            s,
            event=first,
            task_id="part-1",
            next_task_id="part-2",
            result={"new": 250},
            stale_after_s=60,
        )
        # The part that handed on no longer owns the event.
        assert not await repo.finish(s, event=first, task_id="part-1", status=EventStatus.dead)
    async with db.sessionmaker() as s:
        row = await repo.get(s, event_id)
    assert row is not None and row.status == EventStatus.processing and row.started_at is None
    assert row.result == {"new": 250} and row.task_ids == ["t0", "part-1", "part-2"]
    assert await claim(db, event_id, "part-1") is None  # the old part's message, again
    assert await claim(db, event_id, "someone-else") is None
    second = await claim(db, event_id, "part-2")
    assert second is not None and second.attempts == 1  # a part is not an attempt
    assert await claim(db, event_id, "part-2") is None  # a duplicate of the same message


async def test_a_next_part_whose_publish_was_lost_is_republished_still_processing(
    empty_database, db
) -> None:
    # The sweeper takes due events of every tenant: this test's must be the only ones.
    event_id = await new_event(db)
    first = await claim(db, event_id, "part-1")
    async with db.transaction() as s:
        assert await repo.continue_with(
            s,
            event=first,
            task_id="part-1",
            next_task_id="part-2",
            result={},
            stale_after_s=0,
        )
    await asyncio.sleep(0.01)
    async with db.transaction() as s:
        due = await repo.take_due(s, limit=10, stale_after_s=30)
    assert [e.id for e in due] == [event_id]
    assert due[0].status == EventStatus.processing  # the job is still running
    assert await claim(db, event_id, "part-2") is None
    assert await claim(db, event_id, due[0].current_task_id) is not None
