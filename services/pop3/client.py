"""A small asyncio POP3 client (RFC 1939, CAPA and codes from RFC 2449, STLS from RFC 2595):
exactly the commands sync, delete and verification need, with clear errors.

Structured like services/imap/client.py: every connection goes through services/destination.py, a
server that hangs up or stalls is a ProviderTemporaryError, a refused login is BadCredentials,
and no error text ever quotes the server (its greeting, its -ERR text): tenants read what
failed in our words, plus the RFC 2449 response code when the server gave one.

Login: USER/PASS over TLS or STLS, where the channel already hides the password. On a plain
connection ("none", which the destination rules allow like IMAP's), APOP is used when the
greeting offers a timestamp, so the password itself never crosses the wire in clear; APOP's
MD5 is weak, but it is no weaker than sending the password as it is, which is the only other
choice on that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from dataclasses import dataclass
from typing import ClassVar

from services.errors import BadCredentials, ProviderPermanentError, ProviderTemporaryError
from services.mail_session import MailServerConfig, MailSession
from services.pop3.authenticate import bearer_login

# No POSTROOM_MAX_MESSAGE_BYTES in this tree yet: the same default as the IMAP cap it will share.
MAX_MESSAGE_BYTES = 50 * 1024 * 1024
# RFC 1939 allows 512 octets per response line; a generous cap for status and listing lines.
MAX_LINE_BYTES = 8 * 1024
_CHUNK = 256 * 1024
_TIMESTAMP = re.compile(rb"<[!-;=?-~]+@[!-;=?-~]+>")  # RFC 1939 msg-id in the greeting
_CODE = re.compile(rb"^-ERR \[([A-Z][A-Z0-9/-]{0,39})\]")
_UIDL = re.compile(rb"[\x21-\x7e]{1,70}")
_TEMPORARY_CODES = {"IN-USE", "LOGIN-DELAY", "SYS/TEMP"}


class Pop3CommandError(ProviderPermanentError):
    """The POP3 server refused a command."""

    code = "pop3_command_refused"
    response_code: str | None = None  # RFC 2449: IN-USE, LOGIN-DELAY, SYS/TEMP, AUTH ...


@dataclass
class Pop3Config(MailServerConfig):
    section: ClassVar[str] = "pop3"
    max_message_bytes: int = MAX_MESSAGE_BYTES


def _refusal(line: bytes) -> str:
    """` [AUTH]`: the RFC 2449 response code of an -ERR, never its text."""
    m = _CODE.match(line)
    return f" [{m.group(1).decode()}]" if m else ""


def _safe_argument(value: str, what: str) -> bytes:
    """A command argument that cannot end the command line early (and so inject another)."""
    raw = value.encode()
    if any(c in raw for c in b"\r\n\x00"):
        raise BadCredentials(f"The POP3 {what} holds a line break; the server cannot take it.")
    return raw


def unstuff(body: bytes) -> bytes:
    """RFC 1939 3: a line that starts with "." was sent with one more; remove it."""
    if body.startswith(b".."):
        body = body[1:]
    return body.replace(b"\r\n..", b"\r\n.")


class Pop3Client(MailSession):
    role = "POP3"
    refusal = Pop3CommandError

    def __init__(self, config: Pop3Config) -> None:
        self.config = config
        self.capabilities: set[str] = set()
        self.login_method = ""  # "APOP" or "USER": which one the session used
        self.retrieved = 0  # RETR commands sent on this connection (the sync tests count them)
        self._timestamp: bytes | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()
        self._command = "CONNECT"

    # -- connection (connect, _open, _drop: services/mail_session.py) ---------------------
    def abort(self) -> None:
        """Close without QUIT: the server removes none of the messages marked with DELE."""
        self._drop()

    async def _handshake(self, context: ssl.SSLContext | None, server_name: str) -> None:
        """Greeting, CAPA and STLS: everything before the login."""
        greeting = await self._readline()
        if greeting.startswith(b"-ERR"):
            raise ProviderTemporaryError("The POP3 server refused the connection.")
        if not greeting.startswith(b"+OK"):
            raise ProviderTemporaryError("The POP3 server did not greet as a POP3 server.")
        found = _TIMESTAMP.search(greeting)
        self._timestamp = found.group(0) if found else None
        await self.refresh_capabilities()
        if self.config.security == "starttls":
            if "STLS" not in self.capabilities:
                raise ProviderPermanentError("The POP3 server does not offer STLS.")
            await self._simple(b"STLS", name="STLS")
            if self._buf:
                # Bytes after STLS's +OK were sent in clear: read after the handshake they would
                # pass for the server's (the STARTTLS command-injection trick).
                raise ProviderPermanentError("The POP3 server sent data after agreeing to STLS.")
            assert self._writer is not None and context is not None
            await self._writer.start_tls(context, server_hostname=server_name)
            # RFC 2595 4: capabilities may change once TLS is up; the APOP timestamp does not.
            await self.refresh_capabilities()

    async def _login(self) -> None:
        cfg = self.config
        if cfg.oauth is not None:
            await bearer_login(self, cfg.oauth)
            await self.refresh_capabilities()
            return
        user = _safe_argument(cfg.username, "username")
        password = _safe_argument(cfg.password, "password")
        try:
            if cfg.security == "none" and self._timestamp is not None:
                self.login_method = "APOP"
                digest = hashlib.md5(self._timestamp + password, usedforsecurity=False)
                await self._simple(b"APOP " + user + b" " + digest.hexdigest().encode(), "APOP")
            else:
                self.login_method = "USER"
                await self._simple(b"USER " + user, name="USER")
                await self._simple(b"PASS " + password, name="PASS")
        except Pop3CommandError:
            raise BadCredentials("The POP3 server refused the username or password.") from None
        # RFC 2449 5: CAPA after login may list more (PIPELINING, UIDL on some servers).
        await self.refresh_capabilities()

    async def close(self) -> None:
        """QUIT (which commits any DELE) and close; a server that is gone cannot hear it."""
        if self._writer is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.quit(), 2)
        self._drop()

    async def quit(self) -> None:
        """QUIT and wait for +OK: only then are the messages marked with DELE removed."""
        await self._simple(b"QUIT", name="QUIT")
        self._drop()

    async def __aenter__(self) -> Pop3Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    # -- wire -----------------------------------------------------------------------------
    def _lost(self, what: str) -> ProviderTemporaryError:
        return ProviderTemporaryError(f"The POP3 server {what} during {self._command}.")

    async def _fill(self) -> None:
        """Read what the server has sent so far into the buffer (waiting at most `timeout`)."""
        assert self._reader is not None
        try:
            data = await asyncio.wait_for(self._reader.read(_CHUNK), self.config.timeout)
        except TimeoutError:  # before OSError: TimeoutError is one of its subclasses
            raise self._lost(f"did not answer for {self.config.timeout:g}s") from None
        except (ConnectionError, OSError):
            raise self._lost("reset the connection") from None
        if not data:
            raise self._lost("closed the connection")
        self._buf += data

    async def _read_until(self, separator: bytes, cap: int, what: str) -> bytes:
        """Bytes up to and including `separator`; over `cap` bytes without it is an error."""
        pos = 0
        while True:
            found = self._buf.find(separator, pos)
            if found >= 0:
                end = found + len(separator)
                if end > cap:
                    raise self._lost(f"sent {what}")
                out = bytes(self._buf[:end])
                del self._buf[:end]
                return out
            if len(self._buf) > cap:
                raise self._lost(f"sent {what}")
            pos = max(0, len(self._buf) - len(separator) + 1)
            await self._fill()

    async def _readline(self) -> bytes:
        return await self._read_until(b"\r\n", MAX_LINE_BYTES, "an over-long line")

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise self._lost("is not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError):
            raise self._lost("closed the connection") from None

    async def _status(self, name: str) -> bytes:
        """Read one status line: +OK returns it, -ERR raises Pop3CommandError."""
        self._command = name
        line = await self._readline()
        if line.startswith(b"+OK"):
            return line
        if line.startswith(b"-ERR"):
            m = _CODE.match(line)
            code = m.group(1).decode() if m else None
            if code in _TEMPORARY_CODES:
                # RFC 2449 8: the mailbox is locked, or the server is busy; try again later.
                raise ProviderTemporaryError(f"The POP3 server cannot answer {name} now [{code}].")
            error = Pop3CommandError(f"The POP3 server refused {name}{_refusal(line)}.")
            error.response_code = code
            raise error
        raise self._lost("sent a reply that is not POP3")

    async def _simple(self, line: bytes, name: str) -> bytes:
        # The command text is never logged or put in an error: PASS and APOP hold secrets.
        self._command = name
        await self._send(line + b"\r\n")
        return await self._status(name)

    async def _lines(self) -> list[bytes]:
        """The lines of a multi-line answer up to its "." line (small listings only)."""
        out: list[bytes] = []
        while True:
            line = await self._readline()
            if line == b".\r\n":
                return out
            out.append(line[1:-2] if line.startswith(b"..") else line[:-2])

    async def _body(self) -> bytes:
        """A message after RETR's +OK, unstuffed, its CRLF line ends kept.

        The answer is the message, whose every line ends in CRLF, then ".\r\n"; an empty
        message is the "." line alone.
        """
        while len(self._buf) < 3:
            await self._fill()
        if self._buf.startswith(b".\r\n"):
            del self._buf[:3]
            return b""
        cap = self.config.max_message_bytes * 2 + MAX_LINE_BYTES  # dots and CRs added on the wire
        data = await self._read_until(b"\r\n.\r\n", cap, "a message over the size limit")
        return unstuff(data[:-3])

    # -- commands ---------------------------------------------------------------------------
    async def refresh_capabilities(self) -> None:
        """CAPA (RFC 2449); a server without it has none of the extensions we look for."""
        try:
            await self._simple(b"CAPA", name="CAPA")
        except Pop3CommandError:
            self.capabilities = set()
            return
        caps = await self._lines()
        self.capabilities = {c.split(b" ", 1)[0].decode("ascii", "replace").upper() for c in caps}
        # RFC 5034 6: "SASL PLAIN XOAUTH2 ...": kept as AUTH=<mechanism>, the way IMAP says it.
        for c in caps:
            words = c.decode("ascii", "replace").upper().split()
            if words and words[0] == "SASL":
                self.capabilities.update(f"AUTH={w}" for w in words[1:])

    async def uidl(self) -> list[tuple[int, str]]:
        """(message number, unique id) of every message in the maildrop, in order."""
        try:
            await self._simple(b"UIDL", name="UIDL")
        except Pop3CommandError:
            raise ProviderPermanentError(
                "The POP3 server does not support UIDL; postroom needs it to tell messages "
                "apart between syncs."
            ) from None
        out: list[tuple[int, str]] = []
        for line in await self._lines():
            parts = line.split(b" ")
            if len(parts) != 2 or not parts[0].isdigit() or not _UIDL.fullmatch(parts[1]):
                raise self._lost("sent a malformed UIDL listing")
            out.append((int(parts[0]), parts[1].decode("ascii")))
        return out

    async def list_sizes(self) -> dict[int, int]:
        """Message number -> size in octets (LIST)."""
        await self._simple(b"LIST", name="LIST")
        out: dict[int, int] = {}
        for line in await self._lines():
            parts = line.split(b" ")
            if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
                raise self._lost("sent a malformed LIST listing")
            out[int(parts[0])] = int(parts[1])
        return out

    async def retrieve(self, numbers: list[int]) -> list[bytes | None]:
        """RETR each message; pipelined in one write when the server offers PIPELINING.

        A message the server refuses to send (-ERR: unreadable on its side) is None, and the
        others still come: one bad message must not stop the maildrop's sync.
        """
        pipelined = self.has("PIPELINING")
        if pipelined:
            await self._send(b"".join(b"RETR %d\r\n" % n for n in numbers))
        out: list[bytes | None] = []
        for n in numbers:
            self.retrieved += 1
            try:
                if pipelined:
                    await self._status("RETR")
                else:
                    await self._simple(b"RETR %d" % n, name="RETR")
            except Pop3CommandError:
                out.append(None)
                continue
            out.append(await self._body())
        return out

    async def headers(self, number: int) -> bytes:
        """The header of one message (TOP n 0): what is kept of a message over the cap."""
        await self._simple(b"TOP %d 0" % number, name="TOP")
        return await self._body()

    async def delete(self, numbers: list[int]) -> None:
        """DELE each message number (effective at QUIT)."""
        if not numbers:
            return
        if self.has("PIPELINING"):
            await self._send(b"".join(b"DELE %d\r\n" % n for n in numbers))
            for _ in numbers:
                await self._status("DELE")
            return
        for n in numbers:
            await self._simple(b"DELE %d" % n, name="DELE")
