"""Opaque keyset cursors: signed, and bound to the query they came from.

A cursor is base64url(JSON position + a digest of the query's filters) "." HMAC. A cursor
from another query, or one that was edited, is refused with 400 instead of reaching SQL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Any

import orjson

from services.errors import BadRequest
from settings import Settings

_MAX_LEN = 512


def signing_key(settings: Settings) -> bytes:
    """A key for cursors only, derived from the server's secrets (never the secrets themselves)."""
    keys = settings.credential_key_list()
    material = keys[0] if keys else settings.database_url
    return hmac.new(material.encode(), b"postroom cursor v1", hashlib.sha256).digest()


def _scope(filters: dict[str, Any]) -> str:
    canonical = orjson.dumps(filters, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(key: bytes, filters: dict[str, Any], at: datetime, row_id: uuid.UUID) -> str:
    body = _b64(orjson.dumps({"t": at.isoformat(), "i": str(row_id), "s": _scope(filters)}))
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:16])
    return f"{body}.{sig}"


def decode(key: bytes, filters: dict[str, Any], cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (timestamp, id) position of a cursor made for these filters; 400 otherwise."""
    invalid = BadRequest("The cursor is not valid for this query.")
    if len(cursor) > _MAX_LEN or cursor.count(".") != 1:
        raise invalid
    body, sig = cursor.split(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:16])
    if not hmac.compare_digest(expected.encode(), sig.encode("ascii", "replace")):
        raise invalid
    try:
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        at = datetime.fromisoformat(data["t"])
        row_id = uuid.UUID(data["i"])
        scope = data["s"]
    except (ValueError, KeyError, TypeError):
        raise invalid from None
    if scope != _scope(filters) or at.tzinfo is None:
        raise invalid
    return at, row_id


def encode_ranked(
    key: bytes, filters: dict[str, Any], rank: int, at: datetime, row_id: uuid.UUID
) -> str:
    """A cursor for a list ordered by (rank, timestamp, id), such as rules by position."""
    return encode(key, {**filters, "_rank": rank}, at, row_id).replace(".", f".{rank}.", 1)


def decode_ranked(
    key: bytes, filters: dict[str, Any], cursor: str
) -> tuple[int, datetime, uuid.UUID]:
    """The (rank, timestamp, id) position of an `encode_ranked` cursor for these filters."""
    body, _, rest = cursor.partition(".")
    rank_text, _, sig = rest.partition(".")
    if not rank_text.isdigit() or len(rank_text) > 12:
        raise BadRequest("The cursor is not valid for this query.")
    rank = int(rank_text)
    at, row_id = decode(key, {**filters, "_rank": rank}, f"{body}.{sig}")
    return rank, at, row_id
