"""Outbound Nylas calls through the real `nylas` SDK, with its errors mapped to ours.

The SDK is synchronous (requests) and has no retries: calls run in a thread, and the
worker's retry policy decides what happens after a failure (NYLAS.md section 5-6).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from nylas import Client
from nylas.models.errors import NylasApiError, NylasSdkTimeoutError

from services.errors import (
    BadCredentials,
    ProviderNotFound,
    ProviderPermanentError,
    ProviderTemporaryError,
    ValidationFailed,
)
from services.nylas.budget import NylasBudget

T = TypeVar("T")
_TEMPORARY_STATUSES = {408, 425, 429, 500, 502, 503, 504, 507}
# What the API accepts as a grant id (API.md); the SDK puts ids into URL paths unencoded.
GRANT_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


def grant_path(grant_id: str) -> str:
    """A grant id fit for a URL path, or ValidationFailed: `x/../other` must not reach Nylas."""
    if not isinstance(grant_id, str) or not GRANT_ID.fullmatch(grant_id):
        raise ValidationFailed("That is not a Nylas grant id.")
    return grant_id


def id_path(value: str) -> str:
    """A message id for the SDK, which encodes it as one path segment itself (quote, safe="").

    Encoding leaves "." and ".." as they are, and those are dot segments a URL library
    resolves (`messages/..` would be the grant itself): refused, like an empty id.
    """
    text = str(value)
    if text in ("", ".", ".."):
        raise ValidationFailed("That is not a Nylas object id.")
    return text


def _retry_after(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def policy_hint(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, (int, float)) else None


def map_error(exc: BaseException) -> Exception:
    """Nylas SDK / requests exception -> a postroom error the retry policy understands."""
    if isinstance(exc, NylasSdkTimeoutError):
        return ProviderTemporaryError("Nylas did not answer in time.")
    if isinstance(exc, NylasApiError):
        status = int(getattr(exc, "status_code", 0) or 0)
        kind = getattr(exc, "type", None) or "error"
        text = f"Nylas answered {status} ({kind})."
        if status in _TEMPORARY_STATUSES or status >= 500:
            return ProviderTemporaryError(
                text, retry_after=_retry_after(getattr(exc, "headers", None))
            )
        if status == 404:
            return ProviderNotFound(text)
        if status in (401, 403):
            return BadCredentials(text)
        return ProviderPermanentError(text)
    # A non-JSON error page (an HTML 502 from a proxy) surfaces as a JSON decode error.
    if isinstance(exc, (requests.exceptions.JSONDecodeError, json.JSONDecodeError)):
        return ProviderTemporaryError("Nylas answered with a body that is not JSON.")
    if isinstance(exc, (requests.exceptions.RequestException, ConnectionError, OSError)):
        return ProviderTemporaryError(f"Could not reach Nylas ({type(exc).__name__}).")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, NylasApiError) and getattr(exc, "status_code", None) == 429


class NylasGateway:
    """One SDK client per process; every call goes through `call` for budgets and errors.

    With a `budget` (services/nylas/budget.py), a call waits for room in the application's and
    its grant's budgets, and a 429 holds off the grant (or, for an application-wide call such
    as a grant lookup, the application) for every worker until its Retry-After.
    """

    def __init__(
        self, *, api_key: str, api_uri: str, timeout: int, budget: NylasBudget | None = None
    ) -> None:
        self.client = Client(api_key=api_key, api_uri=api_uri, timeout=timeout)
        self.budget = budget

    async def call(self, fn: Callable[[], T], *, grant: str | None = None) -> T:
        if self.budget is not None:
            await self.budget.acquire(grant)
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            mapped = map_error(exc)
            if self.budget is not None and _rate_limited(exc):
                await self.budget.hold(grant, policy_hint(mapped))
            if mapped is exc:
                raise
            raise mapped from None

    async def find_grant(self, grant_id: str) -> dict[str, Any]:
        grant = grant_path(grant_id)
        # An application-level endpoint: its 429 holds off the application, not one grant.
        response = await self.call(lambda: self.client.grants.find(grant_id=grant))
        return response.data.to_dict()  # type: ignore[no-any-return]

    async def find_message(self, grant_id: str, message_id: str) -> dict[str, Any]:
        grant, message = grant_path(grant_id), id_path(message_id)
        response = await self.call(
            lambda: self.client.messages.find(identifier=grant, message_id=message), grant=grant
        )
        return response.data.to_dict()  # type: ignore[no-any-return]

    async def destroy_message(self, grant_id: str, message_id: str) -> None:
        """`messages.destroy`: Nylas moves the message to the provider's trash."""
        grant, message = grant_path(grant_id), id_path(message_id)
        await self.call(
            lambda: self.client.messages.destroy(identifier=grant, message_id=message), grant=grant
        )

    async def update_message_folders(
        self, grant_id: str, message_id: str, folders: list[str]
    ) -> dict[str, Any]:
        """`messages.update` with the folder ids the message should be in (a move)."""
        grant, message = grant_path(grant_id), id_path(message_id)
        response = await self.call(
            lambda: self.client.messages.update(
                identifier=grant,
                message_id=message,
                request_body={"folders": folders},
            ),
            grant=grant,
        )
        return response.data.to_dict()  # type: ignore[no-any-return]

    async def list_messages(
        self, grant_id: str, *, query: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], str | None]:
        grant = grant_path(grant_id)
        response = await self.call(
            lambda: self.client.messages.list(identifier=grant, query_params=query),  # type: ignore[arg-type]
            grant=grant,
        )
        return [m.to_dict() for m in response.data], response.next_cursor

    async def send_message(
        self, grant_id: str, *, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """`messages.send`; the Idempotency-Key makes a repeat within 1 h return the first send."""
        grant = grant_path(grant_id)
        response = await self.call(
            lambda: self.client.messages.send(
                identifier=grant,
                request_body=body,  # type: ignore[arg-type]
                overrides={"headers": {"Idempotency-Key": idempotency_key}},
            ),
            grant=grant,
        )
        return response.data.to_dict()  # type: ignore[no-any-return]
