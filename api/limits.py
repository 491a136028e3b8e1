"""Request limits for /v1, applied before any parsing: body size (413), JSON nesting depth
(400) and NUL characters (422; PostgreSQL text cannot hold them, so refuse at the edge).
A body over 64 KB (declared, or a chunked one once it passes 64 KB) is read only after the
request's API key is checked from its headers: 401/429 without reading or scanning it.

Pure ASGI so an oversized body is refused while streaming, not after it sits in memory whole.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import authenticate
from api.errors import error_body
from services.errors import PostroomError

MAX_DEPTH = 32
_QUOTE, _BACKSLASH, _CURLY_OPEN, _CURLY_CLOSE = ord('"'), ord("\\"), ord("{"), ord("}")
_SLICE = 1 << 20
# Bodies up to this size are checked on the event loop (well under a millisecond).
_INLINE_BYTES = 64 * 1024
# A body over this size is read only after the request's API key is checked (its headers).
AUTH_FIRST_BYTES = 64 * 1024
_NUL = "The request contains a NUL character, which is not accepted."
_NO_BODY = ("GET", "HEAD", "OPTIONS", "DELETE")


def json_depth_exceeds(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when brackets outside strings nest deeper than `limit`; linear in the body.

    All in numpy, a slice of 1 MB at a time, with no Python loop per byte and no regex: a quote
    is a string's edge unless an odd run of backslashes comes right before it; the running
    count of those edges says which bytes are inside a string; the brackets outside are
    steps of +1/-1 whose cumulative sum is the depth. State (inside a string or not, the
    backslash run at the slice's end, the depth) carries from slice to slice; an unterminated
    string runs to the end of the body. numpy releases the GIL in its loops and the GIL can
    change hands between slices, so the event loop is never held for the whole body (the
    earlier regex pass held it for seconds on 16 MB of `["a"],`). Not parse-then-measure:
    orjson refuses nesting past 1024 with the same error as any syntax error, and walking a
    parsed document is a Python loop per node.
    """
    # Cheap exit: fewer opening brackets than the limit cannot nest that deep.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    codes = np.frombuffer(body, dtype=np.uint8)
    depth, in_string, backslashes = 0, 0, 0
    for start in range(0, len(codes), _SLICE):
        chunk = codes[start : start + _SLICE]
        n = len(chunk)
        index = np.arange(n, dtype=np.int64)
        is_backslash = chunk == _BACKSLASH
        # The last byte at or before each position that is not a backslash (-1: none).
        last_other = np.maximum.accumulate(np.where(is_backslash, -1, index))
        before = np.empty(n, dtype=np.int64)
        before[0] = -1
        before[1:] = last_other[:-1]
        # Backslashes right before each byte (a run may have begun in the previous slice).
        run = index - 1 - before + np.where(before == -1, backslashes, 0)
        edges = (chunk == _QUOTE) & ((run & 1) == 0)
        parity = np.cumsum(edges, dtype=np.int64) + in_string
        outside = (parity & 1) == 0
        folded = chunk | 32  # [ and ] fold onto { and }
        brackets = chunk[outside & ((folded == _CURLY_OPEN) | (folded == _CURLY_CLOSE))]
        if len(brackets):
            # [ and { open, ] and } close: ord("[") & 2 == ord("{") & 2 == 2, for "]" and "}" 0.
            running = np.cumsum((brackets & 2).astype(np.int64) - 1) + depth
            if running.max() > limit:
                return True
            depth = int(running[-1])
        in_string = int(parity[-1] & 1)
        backslashes = backslashes + n if last_other[-1] == -1 else int(n - 1 - last_other[-1])
    return False


async def _depth_exceeds(body: bytes) -> bool:
    """The depth check, in a worker thread for a large body: linear, but a 16 MB body is still
    a few seconds of CPU that /health and webhooks must not wait behind on the event loop."""
    if len(body) <= _INLINE_BYTES:
        return json_depth_exceeds(body)
    return await run_in_threadpool(json_depth_exceeds, body)


def has_nul(scope: Scope) -> bool:
    target = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string") or b"")
    return b"%00" in target or "\x00" in scope["path"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, prefix: str = "/v1") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def _refuse(
        self, send: Send, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        extra: dict[str, Any] = {"details": []} if status == 422 else {}
        body = orjson.dumps(error_body(code, message, **extra))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _authenticated(self, scope: Scope, send: Send) -> bool:
        """Authenticate from the headers alone, before a body over 64 KB is read: an
        unauthenticated client never makes this process read (or scan) megabytes. The principal
        is kept in the request's state, so the route does not look the key up again."""
        try:
            await authenticate(scope["app"], scope)
        except PostroomError as exc:
            await self._refuse(send, exc.status_code, exc.code, exc.message, exc.retry_after)
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if has_nul(scope):
            await self._refuse(send, 422, "validation_error", _NUL)
            return
        if scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        too_big = f"The body is over {self.max_bytes} bytes."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, 413, "payload_too_large", too_big)
            return
        checked = False
        if declared is not None and declared.isdigit() and int(declared) > AUTH_FIRST_BYTES:
            if not await self._authenticated(scope, send):
                return
            checked = True
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, 413, "payload_too_large", too_big)
                return
            # A body of unknown length (chunked) that passes 64 KB: authenticate before more.
            if size > AUTH_FIRST_BYTES and not checked:
                if not await self._authenticated(scope, send):
                    return
                checked = True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"\\u0000" in body:
            await self._refuse(send, 422, "validation_error", _NUL)
            return
        if await _depth_exceeds(body):
            message_ = f"The JSON body nests deeper than {MAX_DEPTH} levels."
            await self._refuse(send, 400, "bad_request", message_)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
