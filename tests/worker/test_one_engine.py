"""A single task and a workflow step run through the same engine (worker.execution.execute).

Each test below pins a rule on which the two engines used to differ; each runs `execute`
in-process against the real PostgreSQL (or, for the outage, against none at all).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from database.engine import Database
from database.models import DeadLetter, Event, EventSource, EventStatus
from database.repositories.events import rows as events_repo
from database.task_names import TaskName
from services.errors import ProviderTemporaryError
from services.events.outcome import Outcome
from services.events.unit_of_work import record_event
from tests.factories import create_tenant
from worker.config import route_for
from worker.execution import Decision, execute
from worker.runtime import Runtime


def runtime_on(db: Database, settings: Any) -> Runtime:
    return Runtime(settings=settings, loop=asyncio.get_running_loop(), db=db)


async def new_event(db: Database, tenant_id: uuid.UUID, *, workflow: str | None) -> Any:
    kwargs: dict[str, Any] = {"tenant_id": str(tenant_id), "message_id": str(uuid.uuid4())}
    if workflow:
        kwargs["workflow"] = workflow
    async with db.transaction() as s:
        job = await record_event(
            s,
            task_name=TaskName.classify,
            kwargs=kwargs,
            source=EventSource.api,
            type="message.classify",
            stale_after_s=60,
            tenant_id=tenant_id,
        )
    assert job is not None
    return job


async def run(
    rt: Runtime,
    job: Any,
    *,
    task_id: str,
    work: Any,
    stored: bool,
    redelivered: bool = False,
    **kwargs: Any,
) -> Decision:
    return await execute(
        rt,
        task_name=job.task_name,
        task_id=task_id,
        event_id=job.event_id,
        redelivered=redelivered,
        args=[],
        kwargs={**job.kwargs, **kwargs, "event_id": str(job.event_id)},
        work=work,
        stored=stored,
    )


async def load(db: Database, event_id: uuid.UUID) -> Event:
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
    assert event is not None
    return event


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stored", [True, False], ids=["workflow-step", "single-task"])
async def test_a_database_outage_during_the_claim_is_retried(settings: Any, stored: bool) -> None:
    """Nothing was claimed: the message itself is retried soon (the step engine used to
    let the error escape, leaving the event to the outbox sweeper's stale timeout)."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postroom"
    away = Database.from_settings(settings.model_copy(update={"database_url": url}), pool_size=1)
    ran = False

    async def work(*_: Any) -> Outcome:
        nonlocal ran
        ran = True
        return Outcome("succeeded")

    try:
        decision = await execute(
            runtime_on(away, settings),
            task_name=TaskName.classify,
            task_id="t-1",
            event_id=uuid.uuid4(),
            redelivered=False,
            args=[],
            kwargs={},
            work=work,
            stored=stored,
        )
    finally:
        await away.dispose()
    assert decision.kind == "retry" and decision.countdown is not None
    assert not ran


async def test_a_workflow_step_refuses_a_task_message_of_another_tenant(
    db: Database, settings: Any
) -> None:
    """The engine's tenant check covers steps too (classify used to re-implement it)."""
    tenant = await create_tenant(db)
    job = await new_event(db, tenant.id, workflow="classify-message")
    ran = False

    async def work(*_: Any) -> Outcome:
        nonlocal ran
        ran = True
        return Outcome("succeeded")

    decision = await run(
        runtime_on(db, settings),
        job,
        task_id=job.task_id,
        work=work,
        stored=True,
        tenant_id=str(uuid.uuid4()),
    )
    assert decision.kind == "dead" and not ran
    event = await load(db, job.event_id)
    assert event.status == EventStatus.dead
    assert [(s["name"], s["state"]) for s in event.steps] == [
        ("classify", "dead"),
        ("apply_rules", "pending"),
    ]
    async with db.sessionmaker() as s:
        [letter] = (
            await s.execute(sa.select(DeadLetter).where(DeadLetter.event_id == job.event_id))
        ).scalars()
    assert letter.step == "classify" and letter.exception_type == "PermissionDenied"


@pytest.mark.parametrize("stored", [True, False], ids=["workflow-step", "single-task"])
async def test_a_replay_grants_a_fresh_retry_budget(
    db: Database, settings: Any, stored: bool
) -> None:
    """A replayed dead step used to keep its spent attempts and die on its first transient
    error; now it retries, as a replayed single task always did."""
    tenant = await create_tenant(db)
    job = await new_event(db, tenant.id, workflow="classify-message" if stored else None)
    rt = runtime_on(db, settings)

    async def flaky(*_: Any) -> Outcome:
        raise ProviderTemporaryError("Nylas answered 503 (api_error).")

    budget = route_for(TaskName.classify).max_retries
    kinds = [
        (await run(rt, job, task_id=job.task_id, work=flaky, stored=stored)).kind
        for _ in range(budget + 1)
    ]
    assert kinds == ["retry"] * budget + ["dead"]

    replay_id = str(uuid.uuid4())
    async with db.transaction() as s:
        assert await events_repo.prepare_replay(s, event_id=job.event_id, task_id=replay_id)
    again = await run(rt, job, task_id=replay_id, work=flaky, stored=stored)
    assert again.kind == "retry"
    event = await load(db, job.event_id)
    assert event.status == EventStatus.retrying and event.attempts == budget + 2
    if stored:  # the step's attempts still count every run; its budget restarted
        assert event.steps[0]["attempts"] == budget + 2
        assert event.steps[0]["attempts_before"] == budget + 1


class _Died(BaseException):
    """What a killed worker leaves behind, in-process: the work never ends, nothing is
    recorded (not an Exception, so the engine's failure path does not see it)."""


@pytest.mark.parametrize("stored", [True, False], ids=["workflow-step", "single-task"])
async def test_a_task_whose_worker_dies_every_time_ends_as_a_dead_letter(
    db: Database, settings: Any, stored: bool
) -> None:
    """Each death was redelivered and claimed again, past any budget (24 attempts in the
    review of batches): the attempt after the budget now dead-letters without running."""
    tenant = await create_tenant(db)
    job = await new_event(db, tenant.id, workflow="classify-message" if stored else None)
    rt = runtime_on(db, settings)
    ran = 0

    async def dies(*_: Any) -> Outcome:
        nonlocal ran
        ran += 1
        raise _Died

    def attempt() -> Any:  # each one a redelivery of the message whose worker died
        return run(rt, job, task_id=job.task_id, work=dies, stored=stored, redelivered=True)

    budget = route_for(TaskName.classify).max_retries
    for _ in range(budget + 1):
        with pytest.raises(_Died):
            await attempt()
    assert ran == budget + 1
    last = await attempt()
    assert last.kind == "dead" and ran == budget + 1
    event = await load(db, job.event_id)
    assert event.status == EventStatus.dead
    assert event.last_error is not None and "stopped before it finished" in event.last_error
    async with db.sessionmaker() as s:
        letters = (
            (await s.execute(sa.select(DeadLetter).where(DeadLetter.event_id == job.event_id)))
            .scalars()
            .all()
        )
    assert len(letters) == 1


@pytest.mark.parametrize("stored", [True, False], ids=["workflow-step", "single-task"])
@pytest.mark.parametrize("lost", [False, True], ids=["committed", "lost-claim"])
async def test_the_engine_publishes_only_what_its_commit_kept(
    db: Database, settings: Any, stored: bool, lost: bool
) -> None:
    """The work inserts a follow-up event (a new message's classify run) and hands its task
    message to the engine in its Outcome. Committed: the engine publishes it. Taken over
    while working (a lost claim rolls the work back): the follow-up row never existed, and
    nothing names it (the process task used to publish its chains after such a rollback)."""
    tenant = await create_tenant(db)
    job = await new_event(db, tenant.id, workflow="classify-message" if stored else None)
    follow_up: list[Any] = []

    async def work(session: Any, event: Event, _step: str) -> Outcome:
        chain = await record_event(
            session,
            task_name=TaskName.classify,
            kwargs={"tenant_id": str(tenant.id), "message_id": str(uuid.uuid4())},
            source=EventSource.api,
            type="message.classify",
            stale_after_s=60,
            tenant_id=tenant.id,
            external_id=f"{event.id}:follow-up",
        )
        assert chain is not None
        follow_up.append(chain)
        if lost:  # another run takes the event over while this one works
            async with db.transaction() as other:
                await other.execute(
                    sa.update(Event)
                    .where(Event.id == event.id)
                    .values(current_task_id="another-run")
                )
        return Outcome("succeeded", tenant_id=tenant.id, publish=[chain])

    decision = await run(
        runtime_on(db, settings), job, task_id=job.task_id, work=work, stored=stored
    )
    [chain] = follow_up
    async with db.sessionmaker() as s:
        kept = await s.get(Event, chain.event_id)
    if lost:
        assert decision.kind == "skip"
        assert decision.publish == [] and kept is None
    else:
        assert decision.kind in ("done", "next")
        assert chain in decision.publish and kept is not None
