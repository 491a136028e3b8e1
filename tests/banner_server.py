"""A hostile TCP peer on loopback: it greets with a chosen banner, answers each line it reads
with the next scripted reply, then hangs up. Tests use it to show that what a foreign server
says never reaches an error a tenant can read."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.peers import free_port

BANNER = "SECRET-BANNER-7f3a9c"


@dataclass
class BannerServer:
    greeting: bytes
    replies: list[bytes] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    connections: int = 0
    received: list[bytes] = field(default_factory=list)

    def start(self) -> BannerServer:
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.sendall(self.greeting)
                reader = conn.makefile("rb")
                for reply in self.replies:
                    line = reader.readline()
                    if not line:
                        return
                    self.received.append(line)
                    conn.sendall(reply.replace(b"{tag}", line.split(b" ", 1)[0]))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


@pytest.fixture
def banner_server() -> Iterator[object]:
    """Start hostile peers on demand: `banner_server(greeting, replies)`."""
    started: list[BannerServer] = []

    def start(greeting: bytes, replies: list[bytes] | None = None) -> BannerServer:
        server = BannerServer(greeting, list(replies or [])).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def assert_no_peer_words(message: str, port: int) -> None:
    """A tenant-visible failure: no banner, no address, no port, no exception class name."""
    assert BANNER not in message, message
    assert "127.0.0.1" not in message and str(port) not in message, message
    for name in ("Error(", "Exception", "IMAP4.error", "abort", "SMTPResponse", "OSError"):
        assert name not in message, message
