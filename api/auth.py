"""Bearer API keys: how they are made, stored (sha256 only) and checked on every /v1 request."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import get_database
from database.engine import Database
from database.repositories import api_keys as keys_repo
from services.errors import Unauthorized

KEY_PREFIX = "pr"
_MAX_KEY_LEN = 200
_TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    key_id: uuid.UUID


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    key_hash: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> NewKey:
    """A fresh `pr_<prefix>_<secret>` key; only its hash and prefix are ever stored."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_hex(24)}"
    return NewKey(key=key, prefix=prefix, key_hash=hash_key(key))


# auto_error=False: a missing header must answer our envelope, not FastAPI's 403.
_bearer = HTTPBearer(
    auto_error=False, description="An API key made by `postroom admin create-key`."
)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    db: Annotated[Database, Depends(get_database)],
) -> Principal:
    """The tenant and user behind the Bearer key; 401 for anything else."""
    if credentials is None:
        header = request.headers.get("authorization")
        raise Unauthorized(
            "The Authorization header is missing."
            if header is None
            else "The Authorization header must be 'Bearer <api key>'."
        )
    key = credentials.credentials.strip()
    if not key or len(key) > _MAX_KEY_LEN or not key.startswith(KEY_PREFIX + "_"):
        raise Unauthorized("The API key is not valid.")
    async with db.sessionmaker() as session:
        row = await keys_repo.find_by_hash(session, hash_key(key))
        if row is None or row.revoked_at is not None:
            raise Unauthorized("The API key is not valid or has been revoked.")
        # Record use at most once a minute: most requests then cost one SELECT, no write.
        if row.last_used_at is None or row.last_used_at < datetime.now(UTC) - _TOUCH_EVERY:
            await keys_repo.touch(session, row.id)
            await session.commit()
    principal = Principal(tenant_id=row.tenant_id, user_id=row.user_id, key_id=row.id)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
