"""Outbound events delivered to a real receiver on loopback, verified with `standardwebhooks`
(the receiver's library), through the delivery process's engine (services/tenant_events)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import WebhookVerificationError

from database.repositories.tenant_events import deliveries as deliveries_repo
from services.tenant_events.emit import TenantEventType, emit_many
from tests.api.keys import make_caller
from tests.helpers import wait_for
from tests.services.webhook_support import (
    create_endpoint,
    emit_events,
    until,
    verify,
)
from tests.webhook_receiver import Answer, Receiver


async def deliveries(client: Any, caller: Any, endpoint_id: str, **params: Any) -> list[dict]:
    r = await client.get(
        f"/v1/webhooks/{endpoint_id}/deliveries", params=params, headers=caller.headers
    )
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_delivery_is_signed_per_standard_webhooks_and_filtered(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    every = await create_endpoint(client, caller.headers, receiver.url("/all"))
    sent_only = await create_endpoint(
        client, caller.headers, receiver.url("/sent"), event_types=["message.sent"]
    )
    await start_deliverer()
    (created,) = await emit_events(db, caller.tenant_id)
    (sent,) = await emit_events(db, caller.tenant_id, type=TenantEventType.message_sent)

    await until(lambda: len(receiver.at("/all")) == 2 and len(receiver.at("/sent")) == 1)
    # Concurrent requests may arrive in any order; `seq` is the order.
    bodies = sorted(
        (verify(every["secret"], r) for r in receiver.at("/all")), key=lambda b: b["seq"]
    )
    assert [b["id"] for b in bodies] == [str(created), str(sent)]
    assert [b["type"] for b in bodies] == ["message.created", "message.sent"]
    assert bodies[1]["seq"] == bodies[0]["seq"] + 1
    assert bodies[0]["data"] == {"message": {"id": "m0"}}
    assert set(bodies[0]) == {"id", "type", "timestamp", "seq", "data"}
    req = receiver.at("/sent")[0]
    assert verify(sent_only["secret"], req)["id"] == str(sent)
    assert req.headers["webhook-id"] == str(sent)
    # The other endpoint's secret does not verify it.
    with pytest.raises(WebhookVerificationError):
        verify(every["secret"], req)
    # Never a second copy.
    await asyncio.sleep(0.5)
    assert len(receiver.at("/all")) == 2 and len(receiver.at("/sent")) == 1


async def test_fails_twice_then_succeeds_with_the_same_webhook_id(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    receiver.plan("/flaky", Answer(500), Answer(302, {"location": "/elsewhere"}), Answer(204))
    ep = await create_endpoint(client, caller.headers, receiver.url("/flaky"))
    await start_deliverer()
    (event_id,) = await emit_events(db, caller.tenant_id)

    await until(lambda: len(receiver.at("/flaky")) == 3, timeout=15)
    got = receiver.at("/flaky")
    assert {r.headers["webhook-id"] for r in got} == {str(event_id)}
    for r in got:
        verify(ep["secret"], r)
    assert not receiver.at("/elsewhere")  # redirects are not followed

    async def succeeded() -> bool:
        rows = await deliveries(client, caller, ep["id"])
        return rows[0]["status"] == "succeeded"

    await wait_for(succeeded, timeout=10)
    (row,) = await deliveries(client, caller, ep["id"])
    assert row["attempts"] == 3 and row["last_status_code"] == 204
    assert row["event_id"] == str(event_id) and row["event_type"] == "message.created"


async def test_schedule_runs_out_and_the_delivery_fails(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    receiver.plan("/down", Answer(500))
    ep = await create_endpoint(client, caller.headers, receiver.url("/down"))
    await start_deliverer(webhook_retry_schedule="0.1,0.1")
    await emit_events(db, caller.tenant_id)

    async def failed() -> bool:
        rows = await deliveries(client, caller, ep["id"], status="failed")
        return len(rows) == 1

    await wait_for(failed, timeout=15)
    assert len(receiver.at("/down")) == 3  # the first attempt and two retries
    (row,) = await deliveries(client, caller, ep["id"])
    assert row["attempts"] == 3 and row["last_status_code"] == 500
    assert row["next_attempt_at"] is None


async def test_retry_after_on_503_is_waited_for(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    receiver.plan("/busy", Answer(503, {"retry-after": "2"}), Answer(200))
    await create_endpoint(client, caller.headers, receiver.url("/busy"))
    await start_deliverer()
    await emit_events(db, caller.tenant_id)

    await until(lambda: len(receiver.at("/busy")) == 2, timeout=15)
    first, second = receiver.at("/busy")
    # The schedule alone would have retried within 0.3 s.
    assert second.at - first.at >= 1.9


async def test_410_disables_the_endpoint_and_tells_the_others(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    receiver.plan("/gone", Answer(410))
    gone = await create_endpoint(
        client, caller.headers, receiver.url("/gone"), event_types=["message.created"]
    )
    other = await create_endpoint(client, caller.headers, receiver.url("/other"))
    await start_deliverer()
    await emit_events(db, caller.tenant_id, n=3)

    async def disabled() -> bool:
        r = await client.get(f"/v1/webhooks/{gone['id']}", headers=caller.headers)
        return r.json()["status"] == "disabled"

    await wait_for(disabled, timeout=10)
    await until(
        lambda: any(r.json["type"] == "webhook.disabled" for r in receiver.at("/other")),
        timeout=10,
    )
    notice = next(r for r in receiver.at("/other") if r.json["type"] == "webhook.disabled")
    data = verify(other["secret"], notice)["data"]
    assert data["endpoint"]["id"] == gone["id"] and data["reason"] == "gone"
    assert "secret" not in data["endpoint"]
    await asyncio.sleep(0.5)
    # Disabled at once: its open deliveries failed, none was tried again.
    assert len(receiver.at("/gone")) <= 3
    rows = await deliveries(client, caller, gone["id"])
    assert {r["status"] for r in rows} == {"failed"}

    # PATCH turns it on again; new events reach it.
    receiver.plan("/gone", Answer(200))
    r = await client.patch(
        f"/v1/webhooks/{gone['id']}", json={"status": "active"}, headers=caller.headers
    )
    assert r.status_code == 200 and r.json()["status"] == "active"
    before = len(receiver.at("/gone"))
    await emit_events(db, caller.tenant_id)
    await until(lambda: len(receiver.at("/gone")) == before + 1, timeout=10)


async def test_an_endpoint_failing_for_the_disable_window_is_disabled(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    receiver.plan("/broken", Answer(500))
    ep = await create_endpoint(client, caller.headers, receiver.url("/broken"))
    await create_endpoint(client, caller.headers, receiver.url("/ok"))
    await start_deliverer(webhook_disable_after_s=1.0, webhook_retry_schedule="0.5,0.5,0.5,0.5")
    await emit_events(db, caller.tenant_id)
    await until(lambda: len(receiver.at("/broken")) >= 1)
    # The retries are jittered (0 to 0.5 s each), so one event's five attempts may all fail
    # within the 1 s window and end it. The subject is time failing: once more than the window
    # has passed since the first failure, the next event's failure disables the endpoint.
    await asyncio.sleep(1.2)
    await emit_events(db, caller.tenant_id)

    async def disabled() -> bool:
        r = await client.get(f"/v1/webhooks/{ep['id']}", headers=caller.headers)
        return r.json()["status"] == "disabled"

    await wait_for(disabled, timeout=15)
    await until(
        lambda: any(r.json["type"] == "webhook.disabled" for r in receiver.at("/ok")), timeout=10
    )
    notice = next(r for r in receiver.at("/ok") if r.json["type"] == "webhook.disabled")
    assert notice.json["data"]["reason"] == "failing"


async def test_rotation_signs_with_both_secrets(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    ep = await create_endpoint(client, caller.headers, receiver.url("/rot"))
    r = await client.post(f"/v1/webhooks/{ep['id']}/rotate-secret", headers=caller.headers)
    assert r.status_code == 200
    new = r.json()["secret"]
    assert new.startswith("whsec_") and new != ep["secret"]
    await start_deliverer()
    await emit_events(db, caller.tenant_id)
    await until(lambda: len(receiver.at("/rot")) == 1)
    (req,) = receiver.at("/rot")
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    assert verify(ep["secret"], req) == verify(new, req)


async def test_test_event_goes_to_that_endpoint_only(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    a = await create_endpoint(client, caller.headers, receiver.url("/a"))
    await create_endpoint(client, caller.headers, receiver.url("/b"))
    await start_deliverer()
    r = await client.post(f"/v1/webhooks/{a['id']}/test", headers=caller.headers)
    assert r.status_code == 202
    await until(lambda: len(receiver.at("/a")) == 1)
    assert verify(a["secret"], receiver.at("/a")[0])["type"] == "webhook.test"
    await asyncio.sleep(0.5)
    assert receiver.at("/b") == []


async def test_resend_and_recover_send_again_with_the_same_id(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    receiver.plan("/r", Answer(500))
    ep = await create_endpoint(client, caller.headers, receiver.url("/r"))
    await start_deliverer(webhook_retry_schedule="")
    events = await emit_events(db, caller.tenant_id, n=2)

    async def both_failed() -> bool:
        return len(await deliveries(client, caller, ep["id"], status="failed")) == 2

    await wait_for(both_failed, timeout=10)
    receiver.plan("/r", Answer(200))
    rows = await deliveries(client, caller, ep["id"])
    r = await client.post(
        f"/v1/webhooks/{ep['id']}/deliveries/{rows[0]['id']}/resend", headers=caller.headers
    )
    assert r.status_code == 202
    await until(lambda: len(receiver.at("/r")) == 3)
    r = await client.post(
        f"/v1/webhooks/{ep['id']}/recover",
        json={"since": "2000-01-01T00:00:00Z"},
        headers=caller.headers,
    )
    assert r.status_code == 202 and r.json()["count"] == 1
    await until(lambda: len(receiver.at("/r")) == 4)
    ids = [q.headers["webhook-id"] for q in receiver.at("/r")]
    assert sorted(ids[2:]) == sorted(str(e) for e in events)


async def test_a_delivery_lost_with_its_process_is_sent_again(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    """A process that claimed a delivery and died: the row is due again after its lease."""
    caller = await make_caller(db)
    ep = await create_endpoint(client, caller.headers, receiver.url("/lost"))
    first = await start_deliverer()
    # Stop the first process's claiming: only its sequencer runs.
    first.settings = first.settings.model_copy(update={"webhook_process_in_flight": 0})
    (event_id,) = await emit_events(db, caller.tenant_id)

    async def made() -> bool:
        async with db.transaction() as s:
            n = await s.execute(
                sa.text("SELECT count(*) FROM webhook_delivery WHERE endpoint_id = :e"),
                {"e": ep["id"]},
            )
            return int(n.scalar_one()) == 1

    await wait_for(made)
    # The dead process's claim: taken, never answered.
    async with db.transaction() as s:
        claimed = await deliveries_repo.claim(s, limit=1000, per_endpoint=1000, busy=[], lease_s=1)
    assert str(event_id) in {str(c.event_id) for c in claimed}
    await start_deliverer()
    await until(lambda: len(receiver.at("/lost")) == 1, timeout=10)
    assert receiver.at("/lost")[0].headers["webhook-id"] == str(event_id)


async def test_burst_of_1000_events_loses_nothing(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    caller = await make_caller(db)
    ep = await create_endpoint(client, caller.headers, receiver.url("/burst"))
    await start_deliverer()
    await start_deliverer()  # two processes share the work
    ids: list[str] = []
    for _ in range(10):
        ids += [str(i) for i in await emit_events(db, caller.tenant_id, n=100)]
    await until(lambda: len(receiver.at("/burst")) >= 1000, timeout=60)
    await asyncio.sleep(0.5)
    got = [r.headers["webhook-id"] for r in receiver.at("/burst")]
    assert sorted(got) == sorted(ids)  # each exactly once
    seqs = sorted(r.json["seq"] for r in receiver.at("/burst"))
    assert seqs == list(range(seqs[0], seqs[0] + 1000))
    verify(ep["secret"], receiver.at("/burst")[-1])


async def test_a_hanging_endpoint_does_not_delay_another_tenant(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    slow, fast = await make_caller(db), await make_caller(db)
    receiver.plan("/slow", Answer(200, delay_s=12))
    await create_endpoint(client, slow.headers, receiver.url("/slow"))
    await create_endpoint(client, fast.headers, receiver.url("/fast"))
    await start_deliverer(webhook_endpoint_in_flight=4)
    await emit_events(db, slow.tenant_id, n=200)
    await until(lambda: len(receiver.at("/slow")) >= 4)

    emitted: dict[str, float] = {}
    for _ in range(50):
        (i,) = await emit_events(db, fast.tenant_id)
        emitted[str(i)] = time.monotonic()
        await asyncio.sleep(0.02)
    await until(lambda: len(receiver.at("/fast")) == 50, timeout=20)
    lags = sorted(r.at - emitted[r.headers["webhook-id"]] for r in receiver.at("/fast"))
    p99 = lags[int(len(lags) * 0.99) - 1]
    assert p99 < 1.0, lags[-5:]
    # The hanging endpoint holds only its own slots.
    assert len(receiver.at("/slow")) == 4


async def test_a_stuck_endpoint_shows_in_metrics_and_the_cli(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    import subprocess
    from pathlib import Path

    from tests.helpers import ENV

    root = Path(__file__).resolve().parents[2]

    caller = await make_caller(db)
    receiver.plan("/stuck", Answer(500))
    ep = await create_endpoint(client, caller.headers, receiver.url("/stuck"))
    await start_deliverer(webhook_retry_schedule="3600")
    await emit_events(db, caller.tenant_id, n=3)

    async def retrying() -> bool:
        return len(await deliveries(client, caller, ep["id"], status="retrying")) == 3

    await wait_for(retrying)
    out = subprocess.run(
        [str(root / ".venv" / "bin" / "postroom"), "webhooks", "stuck", "--top", "1000"],
        cwd=root,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (line,) = [x for x in out.splitlines() if ep["id"] in x]
    assert "open=3" in line and "last_error=status 500" in line and "failing_since=20" in line
    text = (await client.get("/metrics")).text
    assert "postroom_webhook_backlog " in text
    assert "postroom_webhook_oldest_pending_seconds " in text
    assert 'postroom_webhook_deliveries_total{outcome="retrying"}' in text


async def test_the_client_connects_only_to_addresses_it_checked(receiver: Receiver) -> None:
    import httpx

    from services.tenant_events import http
    from services.tenant_events.url_policy import WebhookUrlNotAllowed

    pins = http.Pins(allowed="127.0.0.0/8,::1")
    client = http.client(pins, max_connections=4)
    url = f"http://localhost:{receiver.port}/pin"
    try:
        with pytest.raises(httpx.ConnectError):
            await client.post(url)  # never resolved through the policy: never connected
        assert receiver.at("/pin") == []
        await pins.resolve(url)
        assert (await client.post(url)).status_code == 200
        # The name stays the Host (and would be the TLS server name).
        assert receiver.at("/pin")[0].headers["host"] == f"localhost:{receiver.port}"
        with pytest.raises(WebhookUrlNotAllowed):
            await http.Pins(allowed="").resolve(url)
    finally:
        await client.aclose()


async def test_one_process_holds_thousands_of_deliveries_in_flight(
    client: Any, db: Any, receiver: Receiver, start_deliverer: Any
) -> None:
    """No prefork child per socket: one asyncio process keeps over 1,000 slow requests open
    (the receiver runs in the same loop here; `make bench BENCH=deliver` measures rates)."""
    callers = [await make_caller(db) for _ in range(50)]
    receiver.plan("/wide", Answer(200, delay_s=5))
    for caller in callers:
        await create_endpoint(client, caller.headers, receiver.url("/wide"))
    await start_deliverer(webhook_endpoint_in_flight=24, webhook_claim_batch=1200)
    async with db.transaction() as s:
        for caller in callers:
            await emit_many(
                s,
                tenant_id=caller.tenant_id,
                events=[(TenantEventType.message_created, {}) for _ in range(24)],
            )
    await until(lambda: len(receiver.at("/wide")) == 1200, timeout=120)
    assert receiver.peak >= 1000, receiver.peak
