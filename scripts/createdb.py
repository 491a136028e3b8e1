"""Create the database named in POSTROOM_DATABASE_URL when it does not exist yet."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, ".")
from settings import get_settings


async def ensure_database(url: str) -> bool:
    """True when the database was created now."""
    u = make_url(url)
    name = u.database
    conn = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database="postgres"
    )
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
            return True
        return False
    finally:
        await conn.close()


if __name__ == "__main__":
    created = asyncio.run(ensure_database(get_settings().database_url))
    print("created the database" if created else "the database exists")
