"""GET /v1/messages at the database: 100,000 messages in one account; first page, a page
50 pages deep (keyset cursor) and `q=` search through postroom's repository code, next to the
same SQL sent straight through asyncpg (the floor). EXPLAIN shows the plans."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from bench.common import database_url, scratch_database

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
N = int(os.environ.get("BENCH_MESSAGES_ROWS", "100000"))
RUNS = int(os.environ.get("BENCH_MESSAGES_RUNS", "40"))
PAGE = 50
WORDS = [
    "invoice",
    "meeting",
    "report",
    "shipping",
    "password",
    "holiday",
    "budget",
    "contract",
    "welcome",
    "reminder",
    "newsletter",
    "receipt",
    "travel",
    "project",
    "update",
    "security",
]

FILL = """
INSERT INTO message (id, tenant_id, account_id, folder_id, provider_id, subject, from_name,
    from_email, text, snippet, date, sort_at, unread, starred, has_attachments, "references",
    to_addrs, cc_addrs, bcc_addrs, reply_to, headers, flags, labels, parse_warnings, is_spam)
SELECT gen_random_uuid(), $1::uuid, $2::uuid,
    CASE WHEN i % 10 = 0 THEN $4::uuid ELSE $3::uuid END, 'p-' || i,
    'Re: ' || w[1 + i % 16] || ' ' || w[1 + (i / 16) % 16] || ' #' || i,
    'Sender ' || (i % 500), 'sender' || (i % 500) || '@example.com',
    'Hello, about the ' || w[1 + (i / 7) % 16] || ' we discussed: ' ||
      repeat('lorem ipsum dolor sit amet ', 6) ||
      CASE WHEN i % 97 = 0 THEN ' zebrafish' ELSE '' END ||
      CASE WHEN i % 9973 = 0 THEN ' quokka' ELSE '' END,
    'Hello, about the ' || w[1 + (i / 7) % 16],
    now() - make_interval(secs => i * 37), now() - make_interval(secs => i * 37),
    i % 3 = 0, false, false, '[]', '[{"email": "me@example.com"}]', '[]', '[]', '[]', '[]', '[]',
    '[]', '[]', CASE WHEN i % 10 = 0 THEN true ELSE NULL END
FROM generate_series(1, $5) AS i, (SELECT $6::text[] AS w) words
"""


def _raw_sql(stmt: Any) -> tuple[str, list[Any]]:
    """The exact SQL and arguments SQLAlchemy would send through asyncpg."""
    compiled = stmt.compile(dialect=postgresql.asyncpg.dialect())
    params = compiled.construct_params()
    return str(compiled), [params[name] for name in compiled.positiontup]


async def _median_ms(fn: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(3):
        await fn()
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _seed(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    tenant, user, account, inbox, junk = (uuid.uuid4() for _ in range(5))
    await conn.execute("INSERT INTO tenant (id, name) VALUES ($1, 'bench')", tenant)
    await conn.execute(
        "INSERT INTO \"user\" (id, tenant_id, email) VALUES ($1, $2, 'b@x.test')", user, tenant
    )
    await conn.execute(
        "INSERT INTO account (id, tenant_id, user_id, provider, email, status, "
        "sync_interval_s, settings) VALUES ($1, $2, $3, 'imap', 'b@x.test', 'active', 300, '{}')",
        account,
        tenant,
        user,
    )
    for fid, name, role in ((inbox, "INBOX", "inbox"), (junk, "Junk", "junk")):
        await conn.execute(
            "INSERT INTO folder (id, tenant_id, account_id, name, role) "
            "VALUES ($1, $2, $3, $4, $5)",
            fid,
            tenant,
            account,
            name,
            role,
        )
    start = time.perf_counter()
    await conn.execute(FILL, tenant, account, inbox, junk, N, WORDS)
    # A second, smaller mailbox in the same tenant: the account filter must pick its index.
    other = uuid.uuid4()
    await conn.execute(
        "INSERT INTO account (id, tenant_id, user_id, provider, email, status, "
        "sync_interval_s, settings) VALUES ($1, $2, $3, 'imap', 'c@x.test', 'active', 300, '{}')",
        other,
        tenant,
        user,
    )
    await conn.execute(
        FILL.replace("'p-' || i", "'q-' || i"), tenant, other, inbox, junk, N // 5, WORDS
    )
    await conn.execute("VACUUM ANALYZE message")
    print(
        f"inserted {N} + {N // 5} messages (generate_series) in {time.perf_counter() - start:.1f}s"
    )
    return tenant, account


async def _run(db: str) -> None:
    from database.engine import Database
    from database.repositories.messages.query import MessageFilter, list_page, list_query
    from settings import Settings

    dsn = f"postgresql://postgres@127.0.0.1:5432/{db}"
    conn = await asyncpg.connect(dsn)
    database = Database.from_settings(Settings(database_url=database_url(db)), pool_size=1)
    try:
        tenant, account = await _seed(conn)
        deep = await conn.fetchrow(
            "SELECT sort_at, id FROM message WHERE account_id = $1 ORDER BY sort_at DESC, id DESC "
            f"OFFSET {PAGE * 50 - 1} LIMIT 1",
            account,
        )
        cases = [
            ("first page", MessageFilter(tenant_id=tenant, account_id=account), None),
            (
                "page 51 (cursor)",
                MessageFilter(tenant_id=tenant, account_id=account),
                (deep["sort_at"], deep["id"]),
            ),
            ("first page, all accounts", MessageFilter(tenant_id=tenant), None),
            (
                "unread, folder=inbox",
                MessageFilter(tenant_id=tenant, account_id=account, folder="inbox", unread=True),
                None,
            ),
            (
                "q=zebrafish (1%)",
                MessageFilter(tenant_id=tenant, account_id=account, q="zebrafish"),
                None,
            ),
            (
                "q=invoice budget",
                MessageFilter(tenant_id=tenant, account_id=account, q="invoice budget"),
                None,
            ),
            (
                "q=quokka (10 rows)",
                MessageFilter(tenant_id=tenant, account_id=account, q="quokka"),
                None,
            ),
            (
                "q=meeting (common)",
                MessageFilter(tenant_id=tenant, account_id=account, q="meeting"),
                None,
            ),
        ]
        print(
            f"\n{'query':<26} | {'rows':>4} | {'floor ms':>8} | {'postroom ms':>11} | "
            f"{'ratio':>5} | goal"
        )
        plans = []
        async with database.sessionmaker() as session:
            for name, f, after in cases:
                stmt = list_query(f, after=after, limit=PAGE + 1)
                sql, args = _raw_sql(stmt)
                prepared = await conn.prepare(sql)
                rows = len(await prepared.fetch(*args))

                async def floor(prepared: Any = prepared, args: list[Any] = args) -> Any:
                    return await prepared.fetch(*args)

                async def ours(f: MessageFilter = f, after: Any = after) -> Any:
                    return await list_page(session, f, after=after, limit=PAGE + 1)

                floor_ms = await _median_ms(floor)
                ours_ms = await _median_ms(ours)
                goal = 50 if f.q else 20
                verdict = "ok" if ours_ms < goal else "SLOW"
                print(
                    f"{name:<26} | {rows:>4} | {floor_ms:>8.2f} | {ours_ms:>11.2f} | "
                    f"{ours_ms / floor_ms:>5.2f} | <{goal} ms {verdict}"
                )
                plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
                plans.append((name, [r[0] for r in plan]))
        print("\n(median of", RUNS, "runs each; floor = the same SQL prepared once in asyncpg)")
        for name, lines in plans:
            print(f"\n--- EXPLAIN ANALYZE: {name}")
            print("\n".join(lines))
    finally:
        await conn.close()
        await database.dispose()


def main() -> None:
    with scratch_database("postroom_bench_messages") as db:
        asyncio.run(_run(db))


if __name__ == "__main__":
    main()
