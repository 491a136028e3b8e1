"""A local Nylas v3 API speaking the wire format of NYLAS.md section 6, for the real SDK.

State lives in memory per grant; faults can be queued per path (status, Retry-After,
an HTML body instead of JSON, a delay) and every request is recorded for assertions.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_FOLDERS = ["INBOX", "SENT", "TRASH", "SPAM", "DRAFTS"]


@dataclass
class Fault:
    pattern: re.Pattern[str]
    status: int
    times: int
    retry_after: int | None = None
    html: bool = False
    delay: float = 0.0
    method: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    # When it arrived (time.time()), for tests of how far apart calls are (429 hold-off).
    at: float = field(default_factory=time.time)


@dataclass
class FakeNylasState:
    api_key: str
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_message(grant_id: str, message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A Nylas Message object as the API returns it (grant_id is required by the SDK)."""
    now = int(time.time())
    msg = {
        "object": "message",
        "id": message_id or uuid.uuid4().hex,
        "grant_id": grant_id,
        "thread_id": "t-" + uuid.uuid4().hex[:12],
        "subject": "Hello",
        "from": [{"name": "Ann Sender", "email": "ann@example.org"}],
        "to": [{"name": "Bob", "email": "bob@example.com"}],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "date": now,
        "created_at": now,
        "body": "<p>Hello <b>Bob</b></p>",
        "snippet": "Hello Bob",
        "unread": True,
        "starred": False,
        "folders": ["INBOX"],
        "attachments": [],
    }
    msg.update(fields)
    return msg


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send(
            status,
            {"request_id": uuid.uuid4().hex, "error": {"type": type_, "message": message}},
            headers,
        )

    def _ok(self, data: Any, **extra: Any) -> None:
        self._send(200, {"request_id": uuid.uuid4().hex, "data": data, **extra})

    def _handle(self, method: str) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with state.lock:
            state.requests.append(
                Recorded(
                    method, parts.path, parse_qs(parts.query), dict(self.headers.items()), body
                )
            )
            fault = next(
                (
                    f
                    for f in state.faults
                    if f.times > 0
                    and f.pattern.search(parts.path)
                    and (f.method is None or f.method == method)
                ),
                None,
            )
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.html:
                self._send(
                    fault.status,
                    None,
                    raw=b"<html><body>502 Bad Gateway</body></html>",
                    content_type="text/html",
                )
                return
            if fault.status:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
                self._error(
                    fault.status,
                    "api_error" if fault.status >= 500 else "rate_limit",
                    f"injected {fault.status}",
                    headers,
                )
                return
        if self.headers.get("Authorization") != f"Bearer {state.api_key}":
            self._error(401, "unauthorized", "Unauthorized")
            return
        self._route(method, parts.path, parse_qs(parts.query), body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
        state = self.server.state
        grant_only = re.fullmatch(r"/v3/grants/([^/]+)", path)
        if grant_only and method == "GET":
            with state.lock:
                grant = state.grants.get(unquote(grant_only.group(1)))
            if grant is None:
                self._error(404, "not_found_error", "Grant not found")
            else:
                self._ok(grant)
            return
        m = re.fullmatch(r"/v3/grants/([^/]+)/(messages|folders)(?:/([^/]+))?(/send)?", path)
        if not m:
            self._error(404, "not_found", "No such route")
            return
        grant, kind, ident = m.group(1), m.group(2), m.group(3)
        ident = unquote(ident) if ident else None
        with state.lock:
            box = state.messages.setdefault(grant, {})
            if kind == "folders" and method == "GET":
                self._ok(
                    [
                        {"id": n, "grant_id": grant, "name": n, "object": "folder"}
                        for n in DEFAULT_FOLDERS
                    ],
                    next_cursor=None,
                )
                return
            if ident == "send" and method == "POST":
                self._send_message(grant, box, body)
                return
            if ident is None and method == "GET":
                self._list(box, query)
                return
            if ident is None or ident not in box:
                self._error(404, "not_found", "Message not found")
                return
            if method == "GET":
                self._ok(box[ident])
            elif method == "PUT":
                for key in ("unread", "starred", "folders", "metadata"):
                    if isinstance(body, dict) and key in body:
                        box[ident][key] = body[key]
                self._ok(box[ident])
            elif method == "DELETE":
                box[ident]["folders"] = ["TRASH"]
                self._send(200, {"request_id": uuid.uuid4().hex})
            else:
                self._error(405, "invalid_request", "Method not allowed")

    def _list(self, box: dict[str, dict[str, Any]], query: dict[str, list[str]]) -> None:
        items = sorted(box.values(), key=lambda x: (-(x.get("date") or 0), x["id"]))
        after = int(query.get("received_after", ["0"])[0] or 0)
        if after:
            items = [i for i in items if (i.get("date") or 0) > after]
        if "in" in query:
            items = [i for i in items if query["in"][0] in (i.get("folders") or [])]
        limit = min(int(query.get("limit", ["50"])[0]), 200)
        start = int(query.get("page_token", ["0"])[0] or 0)
        page = items[start : start + limit]
        nxt = str(start + limit) if start + limit < len(items) else None
        self._ok(page, next_cursor=nxt)

    def _send_message(self, grant: str, box: dict[str, dict[str, Any]], body: Any) -> None:
        state = self.server.state
        key = self.headers.get("Idempotency-Key")
        if key and (grant, key) in state.idempotency:
            self._ok(state.idempotency[(grant, key)])
            return
        body = body if isinstance(body, dict) else {}
        msg = make_message(
            grant,
            subject=body.get("subject"),
            to=body.get("to", []),
            cc=body.get("cc", []),
            bcc=body.get("bcc", []),
            body=body.get("body"),
            folders=["SENT"],
            unread=False,
        )
        box[msg["id"]] = msg
        if key:
            state.idempotency[(grant, key)] = msg
        self._ok(msg)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeNylasState


class FakeNylas:
    """Run the fake API on 127.0.0.1 in a background thread."""

    def __init__(self, api_key: str = "nyk_test_key") -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = FakeNylasState(api_key=api_key)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def state(self) -> FakeNylasState:
        return self.server.state

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeNylas:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.state.lock:
            self.state.messages.clear()
            self.state.idempotency.clear()
            self.state.grants.clear()
            self.state.faults.clear()
            self.state.requests.clear()

    def put_grant(self, grant_id: str, email: str, provider: str = "google") -> None:
        """A grant of the application, as GET /v3/grants/{id} returns it."""
        with self.state.lock:
            self.state.grants[grant_id] = {
                "id": grant_id,
                "provider": provider,
                "email": email,
                "grant_status": "valid",
                "scope": ["email"],
                "created_at": int(time.time()),
            }

    def put_message(self, grant_id: str, message: dict[str, Any]) -> None:
        with self.state.lock:
            self.state.messages.setdefault(grant_id, {})[message["id"]] = message

    def fail(
        self,
        path_regex: str,
        status: int = 503,
        *,
        times: int = 1,
        retry_after: int | None = None,
        html: bool = False,
        delay: float = 0.0,
        method: str | None = None,
    ) -> None:
        with self.state.lock:
            self.state.faults.append(
                Fault(re.compile(path_regex), status, times, retry_after, html, delay, method)
            )

    def requests_to(self, path_regex: str) -> list[Recorded]:
        with self.state.lock:
            return [r for r in self.state.requests if re.search(path_regex, r.path)]
