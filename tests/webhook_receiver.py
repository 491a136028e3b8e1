"""A real HTTP receiver on loopback for outbound-event tests (TESTING.md "Outbound webhooks").

It records every request (path, headers, body, time) and answers each path by its plan: a
list of `Answer`s used in turn, the last one repeated (default: 200). An answer may wait
before answering (a slow or hanging endpoint).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b"ok"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.plans: dict[str, list[Answer]] = {}
        self.served: dict[str, int] = defaultdict(int)
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.port = 0
        self.arrived = asyncio.Event()
        # Requests being answered right now, and the most at once.
        self.active = 0
        self.peak = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *answers: Answer) -> None:
        self.plans[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(path, headers, body, time.monotonic()))
        self.arrived.set()
        plan = self.plans.get(path) or [Answer()]
        n = self.served[path]
        self.served[path] = n + 1
        answer = plan[min(n, len(plan) - 1)]
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if answer.delay_s:
                await asyncio.sleep(answer.delay_s)
        finally:
            self.active -= 1
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def start(self) -> Receiver:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            loop="asyncio",
            interface="asgi3",
            http="h11",
            timeout_keep_alive=30,
            backlog=4096,
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            self.server.force_exit = True
            await asyncio.wait({self.task}, timeout=5)
