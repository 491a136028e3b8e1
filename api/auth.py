"""Bearer API keys: how they are made, stored (sha256 only) and checked on every /v1 request."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep
from api.ratelimit import spend_key_budget, spend_send_budget, spend_unknown_key_budget
from database.engine import Database
from database.repositories import keys as keys_repo
from services.errors import RateLimited, ServiceUnavailable, Unauthorized

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


# auto_error=False: a missing header must answer our envelope, not FastAPI's 403. Kept for the
# OpenAPI security scheme; the header itself is read by `authenticate`.
_bearer = HTTPBearer(
    auto_error=False, description="An API key made by `postroom admin create-key`."
)


class _Recent:
    """Keys (by hash) found unknown or revoked, and client addresses over their budget of failed
    authentications, remembered for a few seconds in this process: a flood of bad keys then
    costs no query, and an address over its budget not even a Redis call."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._until: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def __contains__(self, name: str) -> bool:
        until = self._until.get(name)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[name]
            return False
        return True

    def remaining(self, name: str) -> float:
        return max(0.0, self._until.get(name, 0.0) - time.monotonic())

    def add(self, name: str, seconds: float) -> None:
        self._until[name] = time.monotonic() + seconds
        self._until.move_to_end(name)
        while len(self._until) > self._max:
            self._until.popitem(last=False)


# A key found valid is remembered this long, so its requests pass an address that is over its
# budget of failed authentications (the key is still looked up: revocation stays immediate).
_KNOWN_FOR_S = 600.0


@dataclass
class _AuthMemory:
    unknown_keys: _Recent
    known_keys: _Recent
    refused_clients: _Recent


def _memory(app: Any) -> _AuthMemory:
    """This process's memory of keys and addresses (on the app, so each app has its own)."""
    memory = getattr(app.state, "auth_memory", None)
    if memory is None:
        memory = app.state.auth_memory = _AuthMemory(_Recent(), _Recent(), _Recent())
    return memory  # type: ignore[no-any-return]


def _over_budget(wait: float) -> RateLimited:
    return RateLimited(
        "Too many requests with a missing or invalid API key from this address; "
        f"retry in {max(1, math.ceil(wait))} s.",
        retry_after=wait,
    )


def _client(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _refuse(app: Any, client: str, message: str) -> NoReturn:
    """401 for a failed authentication, after spending one of the address's budget (429 when
    it is spent; the address is then refused in-process, without Redis, until it refills)."""
    memory = _memory(app)
    if client in memory.refused_clients:
        raise _over_budget(memory.refused_clients.remaining(client))
    wait = await spend_unknown_key_budget(app, client)
    if wait is not None:
        memory.refused_clients.add(client, wait)
        raise _over_budget(wait)
    raise Unauthorized(message)


async def authenticate(app: Any, scope: Mapping[str, Any]) -> Principal:
    """The tenant and user behind the request's Bearer key, from its headers alone (the body
    middleware calls this before reading a large body; the route dependency otherwise).

    Unknown and revoked keys are remembered for POSTROOM_UNKNOWN_KEY_CACHE_S, and every failed
    authentication spends the client address's budget (POSTROOM_UNKNOWN_KEY_PER_S and _BURST):
    past it, a key this process has not seen valid is refused with 429 before any query.
    """
    state = scope.get("state") or {}
    if isinstance(state.get("principal"), Principal):
        return state["principal"]  # type: ignore[no-any-return]
    memory = _memory(app)
    client = _client(scope)
    header = None
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    if header is None:
        await _refuse(app, client, "The Authorization header is missing.")
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        await _refuse(app, client, "The Authorization header must be 'Bearer <api key>'.")
    if len(key) > _MAX_KEY_LEN or not key.startswith(KEY_PREFIX + "_"):
        await _refuse(app, client, "The API key is not valid.")
    key_hash = hash_key(key)
    if key_hash in memory.unknown_keys:
        await _refuse(app, client, "The API key is not valid or has been revoked.")
    if client in memory.refused_clients and key_hash not in memory.known_keys:
        raise _over_budget(memory.refused_clients.remaining(client))
    # Before the database: a request over its key's budget costs one Redis call and no query.
    await spend_key_budget(app, key_hash)
    db: Database = app.state.db
    async with db.sessionmaker() as session:
        row = await keys_repo.find_by_hash(session, key_hash)
        if row is None or row.revoked_at is not None:
            memory.unknown_keys.add(key_hash, app.state.settings.unknown_key_cache_s)
            await _refuse(app, client, "The API key is not valid or has been revoked.")
        # Record use at most once a minute: most requests then cost one SELECT, no write.
        if row.last_used_at is None or row.last_used_at < datetime.now(UTC) - _TOUCH_EVERY:
            await keys_repo.touch(session, row.id)
            await session.commit()
    memory.known_keys.add(key_hash, _KNOWN_FOR_S)
    principal = Principal(tenant_id=row.tenant_id, user_id=row.user_id, key_id=row.id)
    if "state" in scope:
        scope["state"]["principal"] = principal  # type: ignore[index]
    return principal


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The tenant and user behind the Bearer key; 401 for anything else (429 for an address
    that keeps sending bad keys)."""
    principal = await authenticate(request.app, request.scope)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_sender(request: Request, principal: PrincipalDep) -> Principal:
    """The caller of a send: also spends one send of the tenant's per-minute budget."""
    await spend_send_budget(request, principal.tenant_id)
    return principal


SenderDep = Annotated[Principal, Depends(get_sender)]


async def require_ops_token(request: Request, settings: SettingsDep) -> None:
    """/metrics and /health/detailed need POSTROOM_OPS_TOKEN as a Bearer token. They fail
    closed: outside POSTROOM_ENVIRONMENT=development, without a token configured they answer
    503 to everyone (only development serves them open)."""
    if settings.ops_token is None:
        if settings.environment == "development":
            return
        raise ServiceUnavailable(
            "This endpoint is closed: POSTROOM_OPS_TOKEN is not set, and POSTROOM_ENVIRONMENT "
            "is not 'development'. Set a token and send 'Authorization: Bearer <token>'."
        )
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
