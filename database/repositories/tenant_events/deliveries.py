"""Deliveries of tenant events to endpoints (`webhook_delivery`) and the fan-out that makes them.

Fan-out: each tenant with an endpoint has a cursor (`webhook_fanout.last_seq`). One statement
locks the cursors it works on (SKIP LOCKED: several delivery processes share the tenants),
turns the numbered events above each into one row per matching active endpoint, and moves the
cursor to the last event it read. The sequencer gives `seq` only after commit, in commit order
(sequence.py), so nothing above a cursor can appear below it later: no event is skipped, and
the cursor moving in the same statement as the INSERT means none is fanned out twice (the
unique (endpoint_id, event_id) backs that up).

Claim: a process takes due rows by moving their `next_attempt_at` forward by its lease; the
row stays pending/retrying. Its result sets the real next time (or a final status); a
process that dies never writes one, and the row is due again when the lease runs out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import WebhookDelivery, WebhookDeliveryStatus

_d = WebhookDelivery.__table__  # type: ignore[attr-defined]
OPEN = (WebhookDeliveryStatus.pending.value, WebhookDeliveryStatus.retrying.value)

_FANOUT = """
WITH f AS (
    SELECT tenant_id, last_seq FROM webhook_fanout c
    WHERE {which}
      AND EXISTS (
          SELECT 1 FROM tenant_event e WHERE e.tenant_id = c.tenant_id AND e.seq > c.last_seq)
    LIMIT :tenants
    FOR UPDATE SKIP LOCKED
), ev AS (
    SELECT e.id, e.tenant_id, e.type, e.data, e.seq, e.created_at
    FROM f CROSS JOIN LATERAL (
        SELECT t.id, t.tenant_id, t.type, t.data, t.seq, t.created_at FROM tenant_event t
        WHERE t.tenant_id = f.tenant_id AND t.seq > f.last_seq
        ORDER BY t.seq LIMIT :per_tenant
    ) e
), ins AS (
    INSERT INTO webhook_delivery (id, tenant_id, endpoint_id, event_id, status, attempts,
                                  next_attempt_at, created_at, updated_at)
    SELECT gen_random_uuid(), ev.tenant_id, w.id, ev.id, 'pending', 0, now(), now(), now()
    FROM ev JOIN webhook_endpoint w ON w.tenant_id = ev.tenant_id
    WHERE w.status = 'active' AND ev.created_at >= w.created_at
      AND CASE WHEN ev.type = 'webhook.test' THEN ev.data->>'endpoint_id' = w.id::text
               ELSE coalesce(jsonb_typeof(w.event_types), 'null') = 'null'
                    OR jsonb_exists(w.event_types, ev.type) END
    ORDER BY ev.tenant_id, ev.seq
    ON CONFLICT (endpoint_id, event_id) DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE webhook_fanout c SET last_seq = m.top
    FROM (SELECT tenant_id, max(seq) AS top FROM ev GROUP BY tenant_id) m
    WHERE c.tenant_id = m.tenant_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev) AS events, (SELECT count(*) FROM ins) AS deliveries
"""
_FANOUT_SOME = sa.text(_FANOUT.format(which="c.tenant_id = ANY(:tenant_ids)"))
_FANOUT_ALL = sa.text(_FANOUT.format(which="true"))


async def fan_out(
    session: AsyncSession,
    *,
    tenant_ids: list[uuid.UUID] | None,
    tenants: int = 500,
    per_tenant: int = 2000,
) -> tuple[int, int]:
    """Turn numbered events past each cursor into deliveries (of these tenants, or of any);
    -> (events read, deliveries made). The caller commits; call again while events > 0."""
    params: dict[str, Any] = {"tenants": tenants, "per_tenant": per_tenant}
    if tenant_ids is None:
        row = (await session.execute(_FANOUT_ALL, params)).one()
    else:
        row = (await session.execute(_FANOUT_SOME, {**params, "tenant_ids": tenant_ids})).one()
    return int(row.events), int(row.deliveries)


class EventRow(NamedTuple):
    """The event of a claimed delivery, as envelope() reads a tenant_event row."""

    id: uuid.UUID
    type: str
    created_at: datetime
    seq: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    tenant_id: uuid.UUID
    attempts: int
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    endpoint_version: datetime
    # The event, as envelope() reads it.
    event_id: uuid.UUID
    type: str
    data: dict[str, Any]
    seq: int
    created_at: datetime

    @property
    def event(self) -> EventRow:
        return EventRow(self.event_id, self.type, self.created_at, self.seq, self.data)


# The window keeps one endpoint from taking the whole claim; `busy` leaves out endpoints
# whose in-flight cap is reached in this process. The outer WHERE re-checks the row under its
# lock (READ COMMITTED re-evaluates it): of two processes picking one row, one gets it.
_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at) AS rn
        FROM (
            SELECT id, endpoint_id, next_attempt_at FROM webhook_delivery
            WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()
              AND endpoint_id <> ALL(:busy)
            ORDER BY next_attempt_at
            LIMIT :scan
        ) d
    ), picked AS (
        SELECT id FROM due WHERE rn <= :per_endpoint LIMIT :limit
    )
    UPDATE webhook_delivery d SET next_attempt_at = now() + make_interval(secs => :lease_s)
    FROM picked p, tenant_event e, webhook_endpoint w
    WHERE d.id = p.id AND d.status IN ('pending', 'retrying') AND d.next_attempt_at <= now()
      AND e.id = d.event_id AND w.id = d.endpoint_id AND w.status = 'active'
    RETURNING d.id, d.endpoint_id, d.tenant_id, d.attempts, w.url, w.secret, w.previous_secret,
              w.previous_secret_expires_at, w.updated_at AS endpoint_version,
              e.id AS event_id, e.type, e.data, e.seq, e.created_at
    """
).bindparams(
    sa.bindparam("busy", type_=sa.ARRAY(sa.Uuid)),
    sa.bindparam("lease_s", type_=sa.Float),
)


async def claim(
    session: AsyncSession,
    *,
    limit: int,
    per_endpoint: int,
    busy: list[uuid.UUID],
    lease_s: float,
) -> list[Claimed]:
    """Take up to `limit` due deliveries, at most `per_endpoint` of any one endpoint."""
    if limit <= 0:
        return []
    result = await session.execute(
        _CLAIM,
        {
            "limit": limit,
            "scan": max(limit * 4, 100),
            "per_endpoint": per_endpoint,
            "busy": busy,
            "lease_s": float(lease_s),
        },
    )
    return [Claimed(**r) for r in result.mappings()]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt."""

    id: uuid.UUID
    status: str
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None
    attempted_at: datetime


# Only rows still open take a result: a delivery failed by its endpoint's disabling (or
# deleted with it) while the request was in flight stays as it is.
_RECORD = sa.text(
    """
    UPDATE webhook_delivery d SET
        status = r.status, attempts = d.attempts + 1, last_status_code = r.code,
        last_error = r.error, next_attempt_at = r.next_at, last_attempt_at = r.at,
        first_attempt_at = coalesce(d.first_attempt_at, r.at), updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:codes AS int[]),
                CAST(:errors AS text[]), CAST(:next_at AS timestamptz[]),
                CAST(:at AS timestamptz[])) AS r(id, status, code, error, next_at, at)
    WHERE d.id = r.id AND d.status IN ('pending', 'retrying')
    """
).bindparams(
    sa.bindparam("ids", type_=sa.ARRAY(sa.Uuid)),
    sa.bindparam("statuses", type_=sa.ARRAY(sa.String)),
    sa.bindparam("codes", type_=sa.ARRAY(sa.Integer)),
    sa.bindparam("errors", type_=sa.ARRAY(sa.String)),
    sa.bindparam("next_at", type_=sa.ARRAY(sa.DateTime(timezone=True))),
    sa.bindparam("at", type_=sa.ARRAY(sa.DateTime(timezone=True))),
)


async def record(session: AsyncSession, outcomes: list[Outcome]) -> None:
    """Write many attempts' results in one statement."""
    if not outcomes:
        return
    await session.execute(
        _RECORD,
        {
            "ids": [o.id for o in outcomes],
            "statuses": [o.status for o in outcomes],
            "codes": [o.status_code for o in outcomes],
            "errors": [o.error for o in outcomes],
            "next_at": [o.next_attempt_at for o in outcomes],
            "at": [o.attempted_at for o in outcomes],
        },
    )


async def fail_open(session: AsyncSession, *, endpoint_ids: list[uuid.UUID], error: str) -> int:
    """Close every open delivery of these endpoints as failed (they were disabled)."""
    if not endpoint_ids:
        return 0
    stmt = (
        sa.update(_d)
        .where(_d.c.endpoint_id.in_(endpoint_ids), _d.c.status.in_(OPEN))
        .values(
            status=WebhookDeliveryStatus.failed.value,
            last_error=error,
            next_attempt_at=None,
            updated_at=sa.func.now(),
        )
    )
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _reopen_values() -> dict[str, Any]:
    # The retry schedule starts again; `attempts` counts from zero for the new round.
    return {
        "status": WebhookDeliveryStatus.pending.value,
        "attempts": 0,
        "first_attempt_at": None,
        "next_attempt_at": sa.func.now(),
        "updated_at": sa.func.now(),
    }


async def resend(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> bool:
    """Send this delivery again, whatever became of it."""
    stmt = (
        sa.update(_d)
        .where(
            _d.c.tenant_id == tenant_id,
            _d.c.endpoint_id == endpoint_id,
            _d.c.id == delivery_id,
        )
        .values(**_reopen_values())
        .returning(_d.c.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def recover(
    session: AsyncSession, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime
) -> int:
    """Send again every failed delivery of the endpoint created since `since`."""
    stmt = (
        sa.update(_d)
        .where(
            _d.c.tenant_id == tenant_id,
            _d.c.endpoint_id == endpoint_id,
            _d.c.status == WebhookDeliveryStatus.failed.value,
            _d.c.created_at >= since,
        )
        .values(**_reopen_values())
    )
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def list_page(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The endpoint's deliveries newest first, with their event's type."""
    te = sa.table("tenant_event", sa.column("id", sa.Uuid), sa.column("type", sa.String))
    stmt = (
        sa.select(*_d.c, te.c.type.label("event_type"))
        .join(te, te.c.id == _d.c.event_id)
        .where(_d.c.tenant_id == tenant_id, _d.c.endpoint_id == endpoint_id)
    )
    if status is not None:
        stmt = stmt.where(_d.c.status == status)
    if after is not None:
        stmt = stmt.where(sa.tuple_(_d.c.created_at, _d.c.id) < sa.tuple_(*after))
    stmt = stmt.order_by(_d.c.created_at.desc(), _d.c.id.desc()).limit(limit)
    return [dict(r) for r in (await session.execute(stmt)).mappings()]


@dataclass(frozen=True)
class EndpointBacklog:
    endpoint_id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    open: int
    # Seconds since the oldest open delivery was made.
    oldest_s: float
    failing_since: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class Backlog:
    open: int
    oldest_s: float
    # The endpoints with the most open deliveries, most first.
    worst: list[EndpointBacklog]


_BACKLOG = sa.text(
    """
    WITH per AS (
        SELECT endpoint_id, count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age
        FROM webhook_delivery WHERE status IN ('pending', 'retrying')
        GROUP BY endpoint_id
    )
    SELECT per.endpoint_id, w.tenant_id, w.status, per.n, per.age, w.failing_since,
           (SELECT d.last_error FROM webhook_delivery d
            WHERE d.endpoint_id = per.endpoint_id AND d.last_error IS NOT NULL
            ORDER BY d.last_attempt_at DESC NULLS LAST LIMIT 1) AS last_error,
           sum(per.n) OVER () AS total, max(per.age) OVER () AS oldest
    FROM per JOIN webhook_endpoint w ON w.id = per.endpoint_id
    ORDER BY per.n DESC, per.endpoint_id
    LIMIT :top
    """
)


async def backlog(session: AsyncSession, *, top: int = 10) -> Backlog:
    """Open deliveries in all, the age of the oldest, and the `top` endpoints by backlog."""
    rows = (await session.execute(_BACKLOG, {"top": top})).all()
    if not rows:
        return Backlog(open=0, oldest_s=0.0, worst=[])
    worst = [
        EndpointBacklog(
            r.endpoint_id,
            r.tenant_id,
            r.status,
            int(r.n),
            float(r.age),
            r.failing_since,
            r.last_error,
        )
        for r in rows
    ]
    return Backlog(open=int(rows[0].total), oldest_s=float(rows[0].oldest), worst=worst)
