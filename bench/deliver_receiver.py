"""The local receiver of `make bench BENCH=deliver`: answers every POST 200 after reading it.

Run by uvicorn with uvloop and httptools, in a process of its own, so the deliverer and the
floor both post to the same server.
"""

from __future__ import annotations

from typing import Any

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
_BODY = {"type": "http.response.body", "body": b"ok"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(_START)
    await send(_BODY)
