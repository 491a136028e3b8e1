"""The delivery process's engine: number, fan out, claim, POST, record (docs/webhooks.md).

One asyncio process holds thousands of requests in flight (no prefork child per socket).
Three loops share it:
- the sequencer loop numbers committed tenant events (sequence.py) and fans them out into
  deliveries (repositories/tenant_events/deliveries.py) every POSTROOM_WEBHOOK_POLL_INTERVAL_S;
- the claim loop takes due deliveries, leaving out endpoints whose in-flight cap
  (POSTROOM_WEBHOOK_ENDPOINT_IN_FLIGHT) is reached here, so a hanging endpoint holds at most
  its own slots and never another tenant's;
- the writer loop records finished attempts many at a time, and disables endpoints that
  answered 410 or have failed for POSTROOM_WEBHOOK_DISABLE_AFTER_S (telling the tenant's
  other endpoints with `webhook.disabled`, in the same transaction).

Several processes may run: claims are leases in PostgreSQL (a claimed row's next attempt is
moved past the request's deadline), fan-out cursors are locked with SKIP LOCKED, and the
sequencer takes its advisory lock. A process that dies leaves its rows due again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
import orjson
import structlog

from database.base import utcnow
from database.engine import Database
from database.models import WebhookDeliveryStatus
from database.repositories.tenant_events import deliveries as deliveries_repo
from database.repositories.tenant_events import endpoints as endpoints_repo
from database.repositories.tenant_events import sequence
from database.repositories.tenant_events.deliveries import Claimed, Outcome
from services import metrics
from services.destination import failure_kind
from services.errors import ProviderTemporaryError
from services.tenant_events import attempts, http, signing
from services.tenant_events.emit import TenantEventType, emit
from services.tenant_events.endpoints import disabled_payload, unseal
from services.tenant_events.envelope import envelope
from services.tenant_events.url_policy import WebhookUrlNotAllowed
from settings import Settings

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
WRITE_EVERY_S = 0.02
WRITE_BATCH = 1000
# The sequencer loop also looks at every tenant's cursor this often (events numbered by
# another process, a fan-out cut short by a crash).
FULL_FANOUT_EVERY_S = 2.0
CLAIM_COALESCE_S = 0.02
# An endpoint's connection pool is closed after this long without a request.
CLIENT_IDLE_S = 60.0


@dataclass(slots=True)
class Finished:
    endpoint_id: uuid.UUID
    tenant_id: uuid.UUID
    outcome: Outcome
    gone: bool


class Deliverer:
    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.delays = settings.webhook_retry_delays()
        self.pins = http.Pins(allowed=settings.allowed_private_webhook_hosts)
        # One client (connection pool) per endpoint, sized to its in-flight cap: httpcore's
        # pool walks its waiting requests against its connections on every change, which
        # costs quadratic time with thousands in flight in one pool.
        self.clients: dict[uuid.UUID, tuple[float, httpx.AsyncClient]] = {}
        self.per_endpoint = settings.webhook_endpoint_in_flight
        self.held: dict[uuid.UUID, int] = defaultdict(int)
        self.slots: dict[uuid.UUID, asyncio.Semaphore] = {}
        self.in_flight = 0
        self.finished: list[Finished] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self._keys: dict[tuple[uuid.UUID, datetime], tuple[bytes, bytes | None]] = {}
        self.delivered = 0

    # -- the loops ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then let requests in flight finish (up to the timeout)
        and record them."""
        loops = [
            asyncio.create_task(self._guard(self._sequencer_loop, stop)),
            asyncio.create_task(self._guard(self._claim_loop, stop)),
        ]
        writer = asyncio.create_task(self._guard(self._writer_loop, stop))
        try:
            await stop.wait()
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=self.settings.webhook_timeout_s + 1)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self._write_all()

    async def _guard(
        self, loop: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        """Run one loop; an error (the database away) is logged and the loop starts again."""
        while not stop.is_set():
            try:
                await loop(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "deliverer.loop_failed",
                    loop=getattr(loop, "__name__", "?"),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(1.0)

    async def _sequencer_loop(self, stop: asyncio.Event) -> None:
        last_full = 0.0
        while not stop.is_set():
            full = time.monotonic() - last_full >= FULL_FANOUT_EVERY_S
            if full:
                last_full = time.monotonic()
            if not await self.number_and_fan_out(full=full):
                await self._sleep(stop, self.settings.webhook_poll_interval_s)

    async def number_and_fan_out(self, *, full: bool = True) -> int:
        """Number committed events, fan out the tenants touched (all when `full`);
        -> how many tenants had events numbered."""
        async with self.db.transaction() as s:
            top = await sequence.number_pending(s)
        tenants: list[uuid.UUID] | None = None if full else list(top)
        made = 0
        if tenants is None or tenants:
            while True:
                async with self.db.transaction() as s:
                    events, new = await deliveries_repo.fan_out(s, tenant_ids=tenants)
                made += new
                if events == 0:
                    break
        if made:
            self.wake.set()
        return len(top)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        cap = self.settings.webhook_process_in_flight
        batch = self.settings.webhook_claim_batch
        while not stop.is_set():
            room = min(cap - self.in_flight, batch)
            self.wake.clear()
            if room > 0:
                busy = [e for e, n in self.held.items() if n >= self.per_endpoint]
                async with self.db.transaction() as s:
                    rows = await deliveries_repo.claim(
                        s,
                        limit=room,
                        per_endpoint=self.per_endpoint,
                        busy=busy,
                        lease_s=self.settings.webhook_lease_s,
                    )
                for row in rows:
                    self._start(row)
                if len(rows) >= room:
                    await asyncio.sleep(0)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.webhook_poll_interval_s)
            # Let a few more slots free up: one claim for several, not one per finished request.
            await asyncio.sleep(CLAIM_COALESCE_S)

    async def _writer_loop(self, stop: asyncio.Event) -> None:
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(WRITE_EVERY_S)
            await self._write_all()
            if time.monotonic() - last_sweep > CLIENT_IDLE_S / 2:
                last_sweep = time.monotonic()
                await self.close_idle_clients()

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    # -- one delivery -------------------------------------------------------------------

    def _start(self, row: Claimed) -> None:
        self.held[row.endpoint_id] += 1
        self.in_flight += 1
        task = asyncio.create_task(self._deliver(row))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, row: Claimed) -> None:
        started = time.monotonic()
        try:
            slot = self.slots.get(row.endpoint_id)
            if slot is None:
                slot = self.slots[row.endpoint_id] = asyncio.Semaphore(self.per_endpoint)
            async with slot:
                code, retry_after, error = await self._post(row)
            now = utcnow()
            verdict = attempts.judge(
                status_code=code,
                retry_after=retry_after,
                attempts_before=row.attempts,
                delays=self.delays,
                now=now,
            )
            outcome = Outcome(
                id=row.id,
                status=verdict.status.value,
                status_code=code,
                error=error,
                next_attempt_at=verdict.next_attempt_at,
                attempted_at=now,
            )
            self.finished.append(Finished(row.endpoint_id, row.tenant_id, outcome, verdict.gone))
            metrics.WEBHOOK_DELIVERIES.labels(verdict.status.value).inc()
            metrics.WEBHOOK_ATTEMPT.observe(time.monotonic() - started)
        finally:
            n = self.held[row.endpoint_id] - 1
            if n <= 0:
                self.held.pop(row.endpoint_id, None)
                self.slots.pop(row.endpoint_id, None)
            else:
                self.held[row.endpoint_id] = n
            self.in_flight -= 1
            if (
                n == self.per_endpoint - 1
                or self.in_flight == self.settings.webhook_process_in_flight - 1
            ):
                self.wake.set()  # room again for an endpoint, or for the process

    def _signing_keys(self, row: Claimed) -> list[bytes]:
        key = (row.endpoint_id, row.endpoint_version)
        kept = self._keys.get(key)
        if kept is None:
            if len(self._keys) > 50_000:
                self._keys.clear()
            current = signing.secret_key(unseal(self.settings, row.secret))
            previous = (
                signing.secret_key(unseal(self.settings, row.previous_secret))
                if row.previous_secret is not None
                else None
            )
            kept = self._keys[key] = (current, previous)
        current, previous = kept
        until = row.previous_secret_expires_at
        if previous is not None and until is not None and until > utcnow():
            return [current, previous]
        return [current]

    async def _post(self, row: Claimed) -> tuple[int | None, str | None, str | None]:
        """(status code, Retry-After, what went wrong) of one POST."""
        body = orjson.dumps(envelope(row.event))
        headers = signing.headers(
            self._signing_keys(row), str(row.event_id), int(time.time()), body
        )
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                await self.pins.resolve(row.url)
                client = self._client(row.endpoint_id)
                async with client.stream("POST", row.url, content=body, headers=headers) as r:
                    read = 0
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
                    ok = 200 <= r.status_code < 300
                    return (
                        r.status_code,
                        r.headers.get("retry-after"),
                        None if ok else (f"status {r.status_code}"),
                    )
        except WebhookUrlNotAllowed:
            return None, None, "the destination is not allowed"
        except ProviderTemporaryError:
            return None, None, "the host name could not be resolved"
        except TimeoutError:
            return None, None, "timed out"
        except (httpx.HTTPError, OSError) as exc:
            return None, None, failure_kind(exc)

    # -- results ------------------------------------------------------------------------

    async def _write_all(self) -> None:
        while self.finished:
            batch, self.finished = self.finished[:WRITE_BATCH], self.finished[WRITE_BATCH:]
            try:
                await self.write(batch)
            except Exception:
                # Kept for the next round; if this process dies first, the leases run out
                # and the deliveries are sent again (at least once).
                self.finished = batch + self.finished
                raise
            self.delivered += len(batch)

    async def write(self, batch: list[Finished]) -> None:
        """Record attempts; update and disable endpoints; tell tenants what was disabled."""
        ok = {f.endpoint_id for f in batch if f.outcome.status == WebhookDeliveryStatus.succeeded}
        failed = {f.endpoint_id for f in batch} - ok
        gone = {f.endpoint_id for f in batch if f.gone}
        async with self.db.transaction() as s:
            await deliveries_repo.record(s, [f.outcome for f in batch])
            await endpoints_repo.mark_failing(s, failed=sorted(failed), ok=sorted(ok))
            disabled = await endpoints_repo.disable(
                s,
                gone=sorted(gone),
                candidates=sorted(failed - gone),
                failing_for_s=self.settings.webhook_disable_after_s,
            )
            if disabled:
                await deliveries_repo.fail_open(
                    s, endpoint_ids=[e.id for e in disabled], error="endpoint disabled"
                )
            for endpoint in disabled:
                await emit(
                    s,
                    tenant_id=endpoint.tenant_id,
                    type=TenantEventType.webhook_disabled,
                    data=disabled_payload(endpoint),
                )
        for endpoint in disabled:
            metrics.WEBHOOK_DISABLED.labels(endpoint.disabled_reason or "").inc()
            log.info(
                "webhook.endpoint_disabled",
                endpoint_id=str(endpoint.id),
                tenant_id=str(endpoint.tenant_id),
                reason=endpoint.disabled_reason,
            )

    def _client(self, endpoint_id: uuid.UUID) -> httpx.AsyncClient:
        kept = self.clients.get(endpoint_id)
        client = kept[1] if kept is not None else None
        if client is None:
            client = http.client(self.pins, max_connections=self.per_endpoint)
        self.clients[endpoint_id] = (time.monotonic(), client)
        return client

    async def close_idle_clients(self, idle_s: float = CLIENT_IDLE_S) -> None:
        """Close the pools of endpoints nothing was sent to for `idle_s`."""
        cutoff = time.monotonic() - idle_s
        for endpoint_id, (used, client) in list(self.clients.items()):
            if used < cutoff and endpoint_id not in self.held:
                del self.clients[endpoint_id]
                await client.aclose()

    async def aclose(self) -> None:
        await self.close_idle_clients(idle_s=-1.0)
        for _, client in self.clients.values():
            await client.aclose()
        self.clients.clear()
