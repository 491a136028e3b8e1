"""Push leases: which listener holds IDLE for which IMAP account (services/imap/push.py).

A lease is one row per account. Claiming inserts it or takes over one that has expired, in
one statement whose ON CONFLICT ... WHERE re-checks the expiry against the latest committed
row, so two listeners claiming at once never both get an account.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Leased:
    account_id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    # Changes when the account's credentials do: the listener then connects again.
    version: str


# The accounts a listener may watch: live IMAP accounts.
_WATCHABLE = "a.provider = 'imap' AND a.status = 'active' AND a.deleted_at IS NULL"

# SKIP LOCKED: a second listener claiming at the same moment takes other accounts instead of
# waiting for these; the ON CONFLICT guard is what makes the claim exclusive.
_CLAIM = sa.text(f"""
WITH free AS (
    SELECT a.id FROM account a
    WHERE {_WATCHABLE}
      AND NOT EXISTS (
          SELECT 1 FROM push_lease l WHERE l.account_id = a.id AND l.expires_at >= now())
    ORDER BY a.id
    LIMIT :limit
    FOR NO KEY UPDATE OF a SKIP LOCKED
), taken AS (
    INSERT INTO push_lease (account_id, holder, expires_at, claimed_at)
    SELECT id, :holder, now() + make_interval(secs => :lease_s), now() FROM free
    ON CONFLICT (account_id) DO UPDATE
        SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, claimed_at = now()
        WHERE push_lease.expires_at < now()
    RETURNING account_id
)
SELECT a.id, a.tenant_id, a.user_id, c.updated_at AS version
FROM taken t JOIN account a ON a.id = t.account_id
LEFT JOIN credential c ON c.account_id = a.id
""").bindparams(
    sa.bindparam("limit", type_=sa.Integer),
    sa.bindparam("holder", type_=sa.String),
    sa.bindparam("lease_s", type_=sa.Float),
)

# Renew what is still ours and still watchable; let go of the rest (disabled, deleted...).
# A lease another listener took over after it expired has another holder: it is not renewed.
_RENEW = sa.text(f"""
WITH kept AS (
    UPDATE push_lease l SET expires_at = now() + make_interval(secs => :lease_s)
    FROM account a
    WHERE l.account_id = a.id AND l.holder = :holder AND {_WATCHABLE}
    RETURNING l.account_id, a.tenant_id, a.user_id
), dropped AS (
    DELETE FROM push_lease l
    WHERE l.holder = :holder AND l.account_id NOT IN (SELECT account_id FROM kept)
)
SELECT k.account_id AS id, k.tenant_id, k.user_id, c.updated_at AS version
FROM kept k LEFT JOIN credential c ON c.account_id = k.account_id
""").bindparams(
    sa.bindparam("holder", type_=sa.String),
    sa.bindparam("lease_s", type_=sa.Float),
)


def _rows(result: sa.Result[Any]) -> dict[uuid.UUID, Leased]:
    out = {}
    for r in result.mappings():
        version = r["version"].isoformat() if r["version"] is not None else ""
        out[r["id"]] = Leased(r["id"], r["tenant_id"], r["user_id"], version)
    return out


async def claim(
    session: AsyncSession, *, holder: str, limit: int, lease_s: float
) -> dict[uuid.UUID, Leased]:
    """Take up to `limit` accounts that nobody holds (or whose holder's lease ran out)."""
    if limit <= 0:
        return {}
    result = await session.execute(
        _CLAIM, {"holder": holder, "limit": limit, "lease_s": float(lease_s)}
    )
    return _rows(result)


async def renew(session: AsyncSession, *, holder: str, lease_s: float) -> dict[uuid.UUID, Leased]:
    """Extend this holder's leases on watchable accounts; drop its others. -> what it holds."""
    result = await session.execute(_RENEW, {"holder": holder, "lease_s": float(lease_s)})
    return _rows(result)


async def release(session: AsyncSession, *, holder: str) -> int:
    """Give back every lease of this holder (a clean shutdown): others take them at once."""
    t = sa.table("push_lease", sa.column("holder"))
    result = await session.execute(sa.delete(t).where(t.c.holder == holder))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def holders(session: AsyncSession) -> dict[uuid.UUID, str]:
    """Every unexpired lease: account -> holder (operations and tests)."""
    stmt = sa.text("SELECT account_id, holder FROM push_lease WHERE expires_at >= now()")
    return {r[0]: r[1] for r in (await session.execute(stmt)).all()}
