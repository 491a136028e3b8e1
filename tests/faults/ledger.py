"""What was sent, what was answered, and where every accepted event ended: the fault tests'
ledger, printed after each run and asserted on."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from database.engine import Database
from tests.helpers import sign

FINISHED = ("succeeded", "ignored", "dead")


@dataclass
class Ledger:
    fault: str
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    max_latency_s: float = 0.0
    fault_at: float | None = None
    recovered_s: float | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    message_rows: int = 0
    distinct_messages: int = 0
    double_runs: int = 0

    async def post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> str:
        """Deliver one signed notification; the answer's kind is counted."""
        body = json.dumps(payload).encode()
        self.sent += 1
        start = time.monotonic()
        try:
            r = await client.post(
                "/webhooks/nylas",
                content=body,
                headers={"content-type": "application/json", "x-nylas-signature": sign(body)},
            )
            kind = (
                r.json().get("status", str(r.status_code))
                if r.status_code == 200
                else str(r.status_code)
            )
            if kind == "queued":
                self.accepted.add(r.json()["event_id"])
        except httpx.TimeoutException:
            kind = "hang"
        except httpx.TransportError as exc:
            kind = f"transport:{type(exc).__name__}"
        self.max_latency_s = max(self.max_latency_s, time.monotonic() - start)
        self.answers[kind] += 1
        return kind

    async def settle(self, db: Database, *, timeout: float) -> None:
        """Wait until every accepted event finished (or time runs out), then take the figures."""
        deadline = time.monotonic() + timeout
        while True:
            await self._read(db)
            if self.unfinished == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if self.unfinished == 0 and self.fault_at is not None:
            self.recovered_s = round(time.monotonic() - self.fault_at, 1)

    @property
    def unfinished(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in FINISHED)

    async def _read(self, db: Database) -> None:
        ids = list(self.accepted)
        async with db.sessionmaker() as s:
            rows = (
                await s.execute(
                    sa.text(
                        "SELECT status, (SELECT count(*) FROM jsonb_array_elements(history) h "
                        " WHERE h->>'outcome' = 'succeeded') AS wins FROM event "
                        "WHERE id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": ids},
                )
            ).all()
            self.statuses = Counter(r.status for r in rows)
            self.statuses["missing"] = len(ids) - len(rows)
            self.double_runs = sum(1 for r in rows if r.wins > 1)
            self.dead_letters = (
                await s.execute(
                    sa.text(
                        "SELECT count(*) FROM dead_letter"
                        " WHERE event_id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": ids},
                )
            ).scalar_one()
            counts = (
                await s.execute(
                    sa.text(
                        "SELECT count(*), count(DISTINCT (account_id, provider_id)) FROM message"
                    )
                )
            ).one()
            self.message_rows, self.distinct_messages = counts

    def figures(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "sent": self.sent,
            "accepted": len(self.accepted),
            "answers": dict(self.answers),
            "503s": self.answers.get("503", 0),
            "finished": sum(self.statuses.get(s, 0) for s in FINISHED),
            "statuses": {k: v for k, v in self.statuses.items() if v},
            "dead_letters": self.dead_letters,
            "message_rows": self.message_rows,
            "duplicate_rows": self.message_rows - self.distinct_messages,
            "double_runs": self.double_runs,
            "max_answer_s": round(self.max_latency_s, 2),
            "recovered_s": self.recovered_s,
        }

    def print(self) -> None:
        print(f"\nLEDGER {json.dumps(self.figures())}", flush=True)

    def assert_clean(self) -> None:
        f = self.figures()
        assert self.unfinished == 0, f"accepted events not finished in time: {f}"
        assert f["duplicate_rows"] == 0, f
        assert f["double_runs"] == 0, f
        bad = {k: v for k, v in self.answers.items() if k not in ("queued", "duplicate", "503")}
        assert not bad, f"answers other than 200/503: {f}"
