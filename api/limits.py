"""Request limits for /v1, applied before any parsing: body size (413), JSON nesting depth
(400) and NUL characters (422; PostgreSQL text cannot hold them, so refuse at the edge).

Pure ASGI so an oversized body is refused while streaming, not after it sits in memory whole.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

MAX_DEPTH = 32
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_NUL = "The request contains a NUL character, which is not accepted."
_NO_BODY = ("GET", "HEAD", "OPTIONS", "DELETE")


def json_depth_exceeds(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when brackets outside strings nest deeper than `limit`."""
    # Cheap exit: fewer opening brackets than the limit cannot nest that deep.
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for m in _TOKENS.finditer(body):
        tok = m.group()
        if tok in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif tok in (b"]", b"}"):
            depth -= 1
    return False


def has_nul(scope: Scope) -> bool:
    target = bytes(scope.get("raw_path") or b"") + b"?" + bytes(scope.get("query_string") or b"")
    return b"%00" in target or "\x00" in scope["path"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, prefix: str = "/v1") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        extra: dict[str, Any] = {"details": []} if status == 422 else {}
        body = orjson.dumps(error_body(code, message, **extra))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"\\u0000" in body:
            await self._refuse(send, 422, "validation_error", _NUL)
            return
        if json_depth_exceeds(body):
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
