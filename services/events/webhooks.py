"""Nylas webhook verification and envelope parsing (NYLAS.md sections 1-3)."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from services.errors import BadRequest, InvalidSignature, NotificationOutOfWindow, PayloadTooLarge
from settings import WEBHOOK_CLOCK_SKEW_S


def sign(secret: str, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 Nylas puts in X-Nylas-Signature."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, signature: str | None) -> None:
    """Raise InvalidSignature unless `signature` is the HMAC of the exact bytes received."""
    if not signature:
        raise InvalidSignature("X-Nylas-Signature header is missing.")
    expected = sign(secret, body)
    # compare_digest on equal-length ASCII keeps the comparison constant-time.
    if not hmac.compare_digest(
        expected, signature.strip().lower().encode("ascii", "replace").decode()
    ):
        raise InvalidSignature("X-Nylas-Signature does not match the request body.")


def decompress(body: bytes, content_encoding: str | None, *, limit: int) -> bytes:
    """Undo compressed delivery after the signature was checked over the compressed bytes."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BadRequest(f"Unsupported Content-Encoding {encoding!r}.")
    try:
        # Bounded inflation: a small gzip bomb must not become a huge allocation.
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadTooLarge(f"The decompressed body is over {limit} bytes.")
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise BadRequest("The gzip body could not be decompressed.") from exc


def check_time_window(
    body: dict[str, Any], *, now: float, max_age_s: int, skew_s: int = WEBHOOK_CLOCK_SKEW_S
) -> None:
    """Refuse a signed notification whose `time` is older than `max_age_s` or in the future.

    No timestamp is signed and dedupe rows do not live forever, so a captured delivery could
    be replayed once its event row is purged; its `time` (inside the signed body) gives it
    away. 400, not a retryable status: Nylas must not keep retrying it. `time` is absent on
    some notification types; those are left to dedupe alone.
    """
    sent = body.get("time")
    if sent is None:
        return
    if isinstance(sent, bool) or not isinstance(sent, (int, float)):
        raise BadRequest("The notification's 'time' must be Unix seconds.")
    if sent < now - max_age_s:
        raise NotificationOutOfWindow(
            f"The notification's time is {int(now - sent)} s ago, older than the {max_age_s} s "
            "this server accepts (POSTROOM_WEBHOOK_MAX_AGE_S); it is treated as a replay."
        )
    if sent > now + skew_s:
        raise NotificationOutOfWindow(
            f"The notification's time is {int(sent - now)} s in the future, more than the "
            f"{skew_s} s of clock difference this server allows."
        )


@dataclass(frozen=True)
class Notification:
    id: str
    type: str
    body: dict[str, Any]

    @property
    def base_type(self) -> str:
        return base_type(self.type)

    @property
    def suffixes(self) -> frozenset[str]:
        return type_suffixes(self.type)


SUFFIXES = frozenset({"truncated", "transformed", "cleaned", "metadata"})


def base_type(type_: str) -> str:
    """`message.created.cleaned.truncated` -> `message.created` (suffixes are added by Nylas)."""
    parts = type_.split(".")
    while len(parts) > 2 and parts[-1] in SUFFIXES:
        parts.pop()
    return ".".join(parts)


def type_suffixes(type_: str) -> frozenset[str]:
    return frozenset(p for p in type_.split(".")[2:] if p in SUFFIXES)


def parse_notification(raw: bytes) -> Notification:
    """Parse the envelope; 400 for anything that is not a JSON object with string id and type."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("The body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    nid, ntype = body.get("id"), body.get("type")
    if not isinstance(nid, str) or not nid.strip():
        raise BadRequest("The notification has no 'id'.")
    if not isinstance(ntype, str) or not ntype.strip():
        raise BadRequest("The notification has no 'type'.")
    if len(nid) > 500 or len(ntype) > 200:
        raise BadRequest("The notification 'id' or 'type' is too long.")
    if "\x00" in nid or "\x00" in ntype:  # PostgreSQL's text refuses NUL, as jsonb does
        raise BadRequest("The notification 'id' or 'type' contains a NUL character (\\u0000).")
    return Notification(id=nid, type=ntype, body=body)
