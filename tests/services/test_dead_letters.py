"""services.events.dead_letters and `postroom dlq` against the real database and Redis."""

from __future__ import annotations

import subprocess
import uuid
from functools import partial
from typing import Any

import pytest

from database.models import Event, EventStatus, Tenant
from database.repositories.events import dead_letters as dl_repo
from database.repositories.events import rows as events_repo
from services.errors import BadRequest, Conflict, NotFound
from services.events import dead_letters as dlq
from tests.factories import create_tenant
from tests.helpers import ENV
from tests.peers import ROOT, VENV_BIN
from worker import dispatch
from worker.app import make_celery


async def make_dead(
    db: Any,
    tenant: Tenant | None,
    *,
    task_name: str = "postroom.events.process",
    error: str = "ProviderNotFound",
) -> tuple[uuid.UUID, uuid.UUID]:
    """A dead event and its dead letter, as the worker leaves them; (dead letter id, event id)."""
    event_id, task_id = uuid.uuid4(), str(uuid.uuid4())
    async with db.transaction() as s:
        await events_repo.insert_once(
            s,
            event_id=event_id,
            source="api",
            type="test",
            external_id=None,
            task_name=task_name,
            task_id=task_id,
            payload={},
            stale_after_s=30,
            task_kwargs={"account_id": "a1"},
            tenant_id=tenant.id if tenant else None,
        )
        event = await events_repo.claim(s, event_id=event_id, task_id=task_id, lease_s=60)
        assert event is not None
        dl_id = await dl_repo.record(
            s,
            tenant_id=event.tenant_id,
            event_id=event_id,
            task_name=task_name,
            task_id=task_id,
            args=[],
            kwargs={"account_id": "a1", "event_id": str(event_id)},
            exception_type=error,
            exception_message="it broke",
            traceback="Traceback ...",
            attempts=1,
        )
        await events_repo.finish(
            s, event=event, task_id=task_id, status=EventStatus.dead, error=f"{error}: it broke"
        )
    return dl_id, event_id


@pytest.fixture
def publish(settings: Any) -> dlq.Publish:
    return partial(dispatch.publish, make_celery(settings, publisher_only=True))


async def load_event(db: Any, event_id: uuid.UUID) -> Event:
    async with db.sessionmaker() as s:
        event = await s.get(Event, event_id)
        assert event is not None
        return event


async def test_list_pages_newest_first_per_tenant_with_task_filter(
    empty_database: None, db: Any
) -> None:
    # The last query lists every tenant's dead letters: only this test's may exist.
    mine, other = await create_tenant(db), await create_tenant(db)
    made = [
        (await make_dead(db, mine, task_name=f"postroom.mail.{t}"))[0]
        for t in ("send", "send", "delete", "send", "send")
    ]
    await make_dead(db, other, task_name="postroom.mail.send")

    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        rows, cursor = await dlq.list_page(db, tenant_id=mine.id, limit=2, cursor=cursor)
        seen += [r.id for r in rows]
        if cursor is None:
            break
    assert seen == list(reversed(made))

    sends, _ = await dlq.list_page(db, tenant_id=mine.id, task="postroom.mail.send")
    assert len(sends) == 4 and {r.task_name for r in sends} == {"postroom.mail.send"}
    everyone, _ = await dlq.list_page(db, tenant_id=None, task="postroom.mail.send")
    assert len(everyone) == 5


async def test_public_shape_has_exactly_the_api_fields(db: Any) -> None:
    tenant = await create_tenant(db)
    dl_id, event_id = await make_dead(db, tenant)
    data = dlq.public(await dlq.show(db, dl_id, tenant_id=tenant.id))
    assert set(data) == {
        "id",
        "event_id",
        "task_name",
        "args",
        "kwargs",
        "exception_type",
        "exception_message",
        "attempts",
        "first_failed_at",
        "last_failed_at",
        "replayed_at",
    }
    assert data["event_id"] == str(event_id) and data["replayed_at"] is None


async def test_bad_cursor_and_other_tenants_letter_are_refused(db: Any) -> None:
    mine, other = await create_tenant(db), await create_tenant(db)
    dl_id, _ = await make_dead(db, other)
    with pytest.raises(BadRequest):
        await dlq.list_page(db, tenant_id=mine.id, cursor="not-a-cursor")
    with pytest.raises(NotFound):
        await dlq.show(db, dl_id, tenant_id=mine.id)
    with pytest.raises(NotFound):
        await dlq.delete(db, dl_id, tenant_id=mine.id)


async def test_replay_queues_the_event_again_and_keeps_history(db: Any, publish: Any) -> None:
    tenant = await create_tenant(db)
    dl_id, event_id = await make_dead(db, tenant)

    job = await dlq.replay(db, dl_id, tenant_id=tenant.id, publish=publish)

    assert job.published and job.event_id == event_id
    assert job.kwargs == {"account_id": "a1"}
    event = await load_event(db, event_id)
    assert event.status == "queued" and event.current_task_id == job.task_id
    assert [h["outcome"] for h in event.history] == ["dead", "replayed"]
    assert event.history[1]["attempts_before"] == 1
    assert event.task_ids[-1] == job.task_id and event.finished_at is None
    dl = await dlq.show(db, dl_id, tenant_id=tenant.id)
    assert dl.replayed_at is not None and dl.replay_count == 1
    # Still running: a second replay would run the event twice.
    with pytest.raises(Conflict):
        await dlq.replay(db, dl_id, tenant_id=tenant.id, publish=publish)


async def test_replay_without_its_event_is_a_conflict(db: Any, publish: Any) -> None:
    tenant = await create_tenant(db)
    dl_id, event_id = await make_dead(db, tenant)
    async with db.transaction() as s:
        await s.delete(await s.get(Event, event_id))
    with pytest.raises(Conflict):
        await dlq.replay(db, dl_id, tenant_id=tenant.id, publish=publish)


async def test_delete_and_purge(db: Any) -> None:
    tenant = await create_tenant(db)
    ids = [
        (await make_dead(db, tenant, task_name=t))[0]
        for t in ("postroom.mail.send", "postroom.mail.send", "postroom.mail.delete")
    ]
    await dlq.delete(db, ids[0], tenant_id=tenant.id)
    with pytest.raises(NotFound):
        await dlq.show(db, ids[0], tenant_id=tenant.id)
    assert await dlq.purge(db, tenant_id=tenant.id, task="postroom.mail.send") == 1
    rows, _ = await dlq.list_page(db, tenant_id=tenant.id)
    assert [r.id for r in rows] == [ids[2]]


# -- the CLI, as an operator runs it ---------------------------------------------------


def postroom(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "postroom"), "dlq", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


# Seven CLI processes, each importing the app: about 45 s on 2 cores; make test-all (CI).
# Listing, detail and replay through the API stay in make test (tests/api/test_dead_letters.py).
@pytest.mark.slow
async def test_cli_list_show_replay_all_and_purge(empty_database: None, db: Any) -> None:
    # The operator's CLI lists and purges the letters of every tenant (and tenant-less ones).
    tenant = await create_tenant(db)
    sends = [await make_dead(db, tenant, task_name="postroom.mail.send") for _ in range(3)]
    delete_dl, delete_event = await make_dead(db, None, task_name="postroom.mail.delete")

    out = postroom("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith(str(delete_dl))
    assert "postroom.mail.delete ProviderNotFound attempts=1" in lines[0]

    shown = postroom("show", str(delete_dl))
    assert shown.returncode == 0 and '"traceback": "Traceback ..."' in shown.stdout
    missing = postroom("show", str(uuid.uuid4()))
    assert missing.returncode == 1 and missing.stderr.strip() == "No such dead letter."

    bulk = postroom("replay", "--all", "--task", "postroom.mail.send")
    assert bulk.returncode == 0, bulk.stderr
    assert "replayed 3, could not replay 0" in bulk.stdout
    for _, event_id in sends:
        assert (await load_event(db, event_id)).status == "queued"
    assert (await load_event(db, delete_event)).status == "dead"

    one = postroom("replay", str(delete_dl))
    assert one.returncode == 0 and f"event={delete_event}" in one.stdout

    refused = postroom("purge", stdin="n\n")
    assert refused.returncode == 1
    purged = postroom("purge", "--task", "postroom.mail.send", "--yes")
    assert purged.returncode == 0 and "deleted 3" in purged.stdout
    assert postroom("list").stdout.count("\n") == 1
