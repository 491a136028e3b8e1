"""Bearer API keys: how they are made, stored (sha256 only) and checked on every /v1 request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep, get_database
from api.ratelimit import spend_key_budget, spend_send_budget
from database.engine import Database
from database.repositories import keys as keys_repo
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
    key_hash = hash_key(key)
    # Before the database: a request over its key's budget costs one Redis call and no query.
    await spend_key_budget(request, key_hash)
    async with db.sessionmaker() as session:
        row = await keys_repo.find_by_hash(session, key_hash)
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


async def get_sender(request: Request, principal: PrincipalDep) -> Principal:
    """The caller of a send: also spends one send of the tenant's per-minute budget."""
    await spend_send_budget(request, principal.tenant_id)
    return principal


SenderDep = Annotated[Principal, Depends(get_sender)]


async def require_ops_token(request: Request, settings: SettingsDep) -> None:
    """With POSTROOM_OPS_TOKEN set, /metrics and /health/detailed need it as a Bearer token."""
    if settings.ops_token is None:
        return
    header = request.headers.get("authorization") or ""
    scheme, _, given = header.partition(" ")
    expected = settings.ops_token.get_secret_value()
    # Digests of equal length, so compare_digest's time says nothing about the token.
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        hashlib.sha256(given.strip().encode()).digest(),
        hashlib.sha256(expected.encode()).digest(),
    )
    if not ok:
        raise Unauthorized("This endpoint needs 'Authorization: Bearer <POSTROOM_OPS_TOKEN>'.")


OpsTokenDep = Depends(require_ops_token)
