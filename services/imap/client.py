"""A small asyncio IMAP client: exactly the commands sync and delete need, with clear errors.

One command at a time; FETCH results are streamed response by response so a large mailbox
never sits in memory. A server that hangs up or stalls mid-command is a TransientError;
a refused login is BadCredentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import structlog

from services.errors import BadCredentials, ProviderPermanentError, ProviderTemporaryError
from services.imap.authenticate import bearer_login
from services.imap.protocol import (
    ImapProtocolError,
    UidSet,
    copy_uids,
    literal_size,
    parse_items,
    quote,
    response_codes,
)
from services.imap.responses import (
    SPECIAL_USE,
    MailboxInfo,
    SelectInfo,
    fetch_attrs,
    mailboxes,
    search_ranges,
    select_info,
)
from services.mail_session import MailServerConfig, MailSession

__all__ = ["SPECIAL_USE", "ImapClient", "ImapConfig", "MailboxInfo", "SelectInfo"]

# The stream buffer; a longer line is read in pieces of this size up to its cap below.
_READ_LIMIT = 1024 * 1024
# What one answer may cost us, whatever the server says (docs/architecture.md, "A hostile
# IMAP server").
MAX_LINE_BYTES = 1024 * 1024  # one line outside literals
# A plain SEARCH answer is one line (servers without ESEARCH): ~4 million UIDs.
MAX_SEARCH_LINE_BYTES = 32 * 1024 * 1024
MAX_SEARCH_RANGES = 1_000_000
MAX_LITERALS = 64  # per response; ours carry one or two
# An answer held in memory whole (LIST of every folder, SELECT); streamed ones are not.
MAX_HELD_BYTES = 64 * 1024 * 1024
LITERAL_SLACK = 64 * 1024  # over POSTROOM_MAX_MESSAGE_BYTES: headers of a fetched part
DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024

log = structlog.get_logger(__name__)


_ATOM = re.compile(r"[A-Z][A-Z0-9.-]{0,39}")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def internal_date(when: datetime) -> bytes:
    """RFC 3501 date-time: `"26-Nov-2026 15:04:05 +0000"` (English months whatever the locale)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.strftime("%z") or "+0000"
    text = f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} {when:%H:%M:%S} {offset}"'
    return text.encode("ascii")


def _status_words(rest: bytes) -> str:
    """` (NO [TRYCREATE])`: the status and response-code names of a refusal, not its text.

    The human-readable text is the server's own words (RFC 3501 7.1); tenants are shown only
    the machine part, which says what went wrong well enough.
    """
    status = rest.split(b" ", 1)[0].decode("ascii", "replace").upper()
    codes = [c for c in response_codes(rest) if _ATOM.fullmatch(c)]
    words = status if status in ("NO", "BAD") else "refused"
    return f" ({words}{''.join(f' [{c}]' for c in codes[:3])})"


class ImapCommandError(ProviderPermanentError):
    """The IMAP server refused a command."""

    code = "imap_command_refused"


class ImapProtocolViolation(ProviderTemporaryError):
    """The IMAP server broke the protocol or a size cap; the connection was closed."""

    code = "imap_protocol_error"


T = TypeVar("T")


@dataclass
class ImapConfig(MailServerConfig):
    section: ClassVar[str] = "imap"
    # The largest message whose body is downloaded; literals past it (plus slack) are refused.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


class ImapClient(MailSession):
    role = "IMAP"
    refusal = ImapCommandError
    read_limit = _READ_LIMIT

    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self.capabilities: set[str] = set()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tag = 0
        self._command = "CONNECT"
        self._enabled = False
        # A read's deadline while IDLE waits for news (None: the configured timeout).
        self._wait: float | None = None

    # -- connection (connect, _open, _drop: services/mail_session.py) ---------------------
    async def _handshake(self, context: ssl.SSLContext | None, server_name: str) -> None:
        """Greeting, capabilities and STARTTLS: everything before LOGIN."""
        cfg = self.config
        greeting = await self._readline()
        if greeting.startswith(b"* BYE"):
            raise ProviderTemporaryError("The IMAP server refused the connection (BYE).")
        if not greeting[:9].upper().startswith((b"* OK", b"* PREAUTH")):
            raise ProviderTemporaryError("The IMAP server did not greet as an IMAP server.")
        codes = response_codes(greeting)
        if "CAPABILITY" in codes and cfg.security != "starttls":
            self.capabilities = set(codes["CAPABILITY"].upper().split())
        else:
            await self.refresh_capabilities()
        if cfg.security == "starttls":
            if "STARTTLS" not in self.capabilities:
                raise ProviderPermanentError("The IMAP server does not offer STARTTLS.")
            await self.simple("STARTTLS")
            assert self._writer is not None and context is not None
            await self._writer.start_tls(context, server_hostname=server_name)
            await self.refresh_capabilities()

    async def _login(self) -> None:
        cfg = self.config
        if cfg.oauth is not None:
            status = await bearer_login(self, cfg.oauth)
        else:
            if "LOGINDISABLED" in self.capabilities:
                raise ProviderPermanentError("The IMAP server disables LOGIN on this connection.")
            # The command text is never logged or put in an error: it holds the password.
            line = b"LOGIN " + self._astring(cfg.username) + b" " + self._astring(cfg.password)
            try:
                _, status = await self._run(line, name="LOGIN")
            except ImapCommandError:
                raise BadCredentials("The IMAP server refused the username or password.") from None
        codes = response_codes(status)
        if "CAPABILITY" in codes:
            self.capabilities = set(codes["CAPABILITY"].upper().split())
        else:
            await self.refresh_capabilities()

    async def _enable(self) -> None:
        """ENABLE QRESYNC (or CONDSTORE) once, before the first SELECT (RFC 7162 3.2.3)."""
        if self._enabled:
            return
        self._enabled = True
        for ext in ("QRESYNC", "CONDSTORE"):
            if ext in self.capabilities and "ENABLE" in self.capabilities:
                await self.simple(f"ENABLE {ext}")
                break

    def _astring(self, value: str) -> bytes:
        raw = value.encode()
        needs_literal = b"\r" in raw or b"\n" in raw or any(b > 0x7E for b in raw)
        # A non-synchronizing literal needs LITERAL+ (RFC 7888); without it we quote and hope.
        if needs_literal and self.capabilities & {"LITERAL+", "LITERAL-"}:
            return b"{%d+}\r\n" % len(raw) + raw
        return quote(value)

    async def close(self) -> None:
        if self._writer is None:
            return
        # Say goodbye without waiting for the answer; a server that is gone cannot hear it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send(b"LOGOUT"), 2)
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2)
        self._writer = None

    async def reopen(self) -> None:
        """A fresh connection (after a broken answer): log in again, ENABLE again."""
        await self.close()
        self._enabled = False
        await self.connect()

    async def __aenter__(self) -> ImapClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    # -- wire -----------------------------------------------------------------------------
    def _lost(self, what: str) -> ProviderTemporaryError:
        return ProviderTemporaryError(
            f"The IMAP server {what} during {self._command}; the sync will be retried."
        )

    def _violation(self, what: str) -> ImapProtocolViolation:
        """Drop the connection: after a broken answer nothing more on it can be trusted."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
        log.warning("imap_protocol_violation", command=self._command, reason=what)
        return ImapProtocolViolation(
            f"The IMAP server {what} during {self._command}; the connection was closed."
        )

    @contextlib.contextmanager
    def _grammar(self) -> Iterator[None]:
        """An answer that cannot be read ends the connection with a clear error."""
        try:
            yield
        except ImapProtocolError as exc:
            raise self._violation(f"sent a broken answer ({exc})") from None

    async def _io(self, op: Awaitable[T]) -> T:
        timeout = self.config.timeout if self._wait is None else self._wait
        try:
            return await asyncio.wait_for(op, timeout)
        except asyncio.IncompleteReadError:
            raise self._lost("closed the connection") from None
        except TimeoutError:  # before OSError: TimeoutError is one of its subclasses
            raise self._lost(f"did not answer for {timeout:g}s") from None
        except (ConnectionError, OSError):
            raise self._lost("reset the connection") from None

    async def _readline(self, cap: int = MAX_LINE_BYTES) -> bytes:
        """One line up to CRLF, read in buffer-sized pieces so its cost stops at `cap`."""
        assert self._reader is not None
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                piece = await self._io(self._reader.readuntil(b"\r\n"))
                done = True
            except asyncio.LimitOverrunError as exc:
                piece = await self._io(self._reader.readexactly(max(exc.consumed, 1)))
                done = False
            total += len(piece)
            if total > cap:
                raise self._violation(f"sent a line longer than {cap} bytes")
            parts.append(piece)
            if done:
                return b"".join(parts)

    @property
    def max_literal(self) -> int:
        return self.config.max_message_bytes + LITERAL_SLACK

    async def _read_response(self, line_cap: int = MAX_LINE_BYTES) -> bytes:
        """One whole response: its lines and the literals they announce, each within a cap."""
        assert self._reader is not None
        line = await self._readline(line_cap)
        with self._grammar():
            size = literal_size(line)
        parts = [line]
        total = len(line)
        while size is not None:
            if size > self.max_literal:
                raise self._violation(
                    f"announced a {size}-byte literal, over the {self.max_literal}-byte cap"
                )
            total += size
            if len(parts) > 2 * MAX_LITERALS or total > self.max_literal + MAX_LINE_BYTES:
                raise self._violation("sent an answer over the size cap")
            parts.append(await self._io(self._reader.readexactly(size)))
            line = await self._readline(line_cap)
            total += len(line)
            parts.append(line)
            with self._grammar():
                size = literal_size(line)
        return b"".join(parts)

    async def _send(self, line: bytes) -> bytes:
        if self._writer is None:
            raise self._lost("is not connected")
        self._tag += 1
        tag = b"P%d" % self._tag
        try:
            self._writer.write(tag + b" " + line + b"\r\n")
            await self._writer.drain()
        except (ConnectionError, OSError):
            raise self._lost("closed the connection") from None
        return tag

    async def _stream(
        self,
        line: bytes,
        *,
        name: str,
        line_cap: int = MAX_LINE_BYTES,
        max_bytes: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Send a command; yield its untagged responses; raise on NO/BAD. Last yield: status.

        `max_bytes` bounds the whole answer: a server that declared small sizes and then
        sends large messages cannot fill memory with one batch.
        """
        self._command = name
        tag = await self._send(line)
        bye = False
        total = 0
        while True:
            resp = await self._read_response(line_cap)
            total += len(resp)
            if max_bytes is not None and total > max_bytes:
                raise self._violation(f"sent more than the {max_bytes} bytes expected")
            if resp.startswith(tag + b" "):
                rest = resp[len(tag) + 1 :]
                if rest[:2].upper() == b"OK":
                    yield resp
                    return
                raise ImapCommandError(f"The IMAP server refused {name}{_status_words(rest)}.")
            if resp.startswith(b"* BYE"):
                bye = True  # the tagged answer may still follow; EOF otherwise
                continue
            if resp.startswith(b"+") and bye:
                raise self._lost("said BYE")
            yield resp

    async def _run(self, line: bytes, *, name: str) -> tuple[list[bytes], bytes]:
        """A command whose answer is held whole (LIST, SELECT...): MAX_HELD_BYTES at most."""
        untagged: list[bytes] = []
        status = b""
        async for resp in self._stream(line, name=name, max_bytes=MAX_HELD_BYTES):
            untagged.append(resp)
        if untagged:
            status = untagged.pop()
        return untagged, status

    async def simple(self, command: str) -> tuple[list[bytes], bytes]:
        return await self._run(command.encode(), name=command.split(" ", 1)[0].upper())

    async def refresh_capabilities(self) -> None:
        untagged, _ = await self.simple("CAPABILITY")
        for resp in untagged:
            if resp.upper().startswith(b"* CAPABILITY "):
                self.capabilities = set(resp[13:].decode().upper().split())

    # -- mailbox commands -----------------------------------------------------------------
    async def list_mailboxes(self) -> list[MailboxInfo]:
        """LIST every mailbox with its SPECIAL-USE role (and STATUS when LIST-STATUS exists)."""
        status_items = "MESSAGES UIDNEXT UIDVALIDITY"
        if self.has("CONDSTORE"):
            status_items += " HIGHESTMODSEQ"
        returns = []
        if self.has("SPECIAL-USE"):
            returns.append("SPECIAL-USE")
        if self.has("LIST-STATUS"):
            returns.append(f"STATUS ({status_items})")
        cmd = 'LIST "" "*"' + (f" RETURN ({' '.join(returns)})" if returns else "")
        untagged, _ = await self.simple(cmd)
        with self._grammar():
            return mailboxes(untagged)

    async def select(self, mailbox: str, *, readonly: bool = False) -> SelectInfo:
        await self._enable()
        verb = "EXAMINE" if readonly else "SELECT"
        suffix = b" (CONDSTORE)" if self.has("CONDSTORE") else b""
        untagged, status = await self._run(
            verb.encode() + b" " + self._astring(mailbox) + suffix, name=verb
        )
        with self._grammar():
            return select_info([*untagged, status])

    async def uid_search(self, criteria: str) -> UidSet:
        """The UIDs matching; with ESEARCH (RFC 4731) the server sends ranges, not a list."""
        esearch = self.has("ESEARCH")
        cmd = f"UID SEARCH {'RETURN (ALL) ' if esearch else ''}{criteria}".encode()
        ranges: list[tuple[int, int]] = []
        stream = self._stream(cmd, name="UID SEARCH", line_cap=MAX_SEARCH_LINE_BYTES)
        async for resp in stream:
            with self._grammar():
                search_ranges(resp, ranges)
            if len(ranges) > MAX_SEARCH_RANGES:
                raise self._violation(f"sent more than {MAX_SEARCH_RANGES} UID ranges")
        return UidSet(ranges)

    async def uid_fetch(
        self,
        uid_set: str,
        items: str,
        *,
        changed_since: int | None = None,
        vanished: bool = False,
        max_bytes: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `{"UID": .., "FLAGS": .., ...}` per message; `{"VANISHED": UidSet}` too.

        A message whose FETCH answer cannot be read comes as `{"UID": n, "PROBLEM": why}`:
        the answer was framed correctly, so the connection is still usable for the others.
        """
        modifiers = ""
        if changed_since is not None:
            modifiers = f" (CHANGEDSINCE {changed_since}{' VANISHED' if vanished else ''})"
        line = f"UID FETCH {uid_set} ({items}){modifiers}".encode()
        async for resp in self._stream(line, name="UID FETCH", max_bytes=max_bytes):
            if resp.startswith(b"* ") and b" FETCH (" in resp[:40].upper():
                attrs = fetch_attrs(resp)
                if attrs is not None:
                    yield attrs
            elif resp[:11].upper() == b"* VANISHED ":
                text = resp[11:].strip().decode("ascii", "replace")
                text = text.removeprefix("(EARLIER)").strip()
                with self._grammar():
                    gone = UidSet.parse(text)
                yield {"VANISHED": gone}

    async def uid_store(self, uid_set: str, change: str) -> None:
        await self.simple(f"UID STORE {uid_set} {change}")

    async def uid_move(self, uid_set: str, target: str) -> tuple[int, dict[int, int]] | None:
        """UID MOVE; with UIDPLUS, (the target's UIDVALIDITY, old UID -> new UID), else None.

        RFC 6851 puts the COPYUID in an untagged OK before the EXPUNGEs; some servers put it in
        the tagged answer, as for COPY: both are read.
        """
        untagged, status = await self._run(
            f"UID MOVE {uid_set} ".encode() + self._astring(target), name="UID MOVE"
        )
        return copy_uids([*untagged, status], limit=UidSet.parse(uid_set).count)

    async def uid_copy(self, uid_set: str, target: str) -> tuple[int, dict[int, int]] | None:
        untagged, status = await self._run(
            f"UID COPY {uid_set} ".encode() + self._astring(target), name="UID COPY"
        )
        return copy_uids([*untagged, status], limit=UidSet.parse(uid_set).count)

    async def append(self, mailbox: str, messages: list[bytes], flags: str = "") -> None:
        """APPEND messages in one command (MULTIAPPEND + LITERAL+), else one by one."""
        if not messages:
            return
        if not (self.has("MULTIAPPEND") and self.has("LITERAL+")):
            for raw in messages:
                await self._append_one(mailbox, raw, flags)
            return
        prefix = f" ({flags})".encode() if flags else b""
        line = b"APPEND " + quote(mailbox)
        for raw in messages:
            line += prefix + b" {%d+}\r\n" % len(raw) + raw
        await self._run(line, name="APPEND")

    async def append_one(
        self, mailbox: str, raw: bytes, *, flags: str = "", when: datetime | None = None
    ) -> dict[str, str]:
        """APPEND one message; the response codes of the server's OK (APPENDUID with UIDPLUS).

        `when` is the INTERNALDATE to give it (the server's clock when None).
        """
        date = b" " + internal_date(when) if when is not None else b""
        if self.has("LITERAL+"):
            prefix = f" ({flags})".encode() if flags else b""
            line = b"APPEND " + quote(mailbox) + prefix + date + b" {%d+}\r\n" % len(raw) + raw
            _, status = await self._run(line, name="APPEND")
        else:
            status = await self._append_one(mailbox, raw, flags, date)
        return response_codes(status)

    async def create(self, mailbox: str) -> None:
        await self._run(b"CREATE " + quote(mailbox), name="CREATE")

    async def _append_one(self, mailbox: str, raw: bytes, flags: str, date: bytes = b"") -> bytes:
        """APPEND with a synchronizing literal; the tagged OK line."""
        # A synchronizing literal: wait for the server's "+" before sending the message.
        self._command = "APPEND"
        prefix = f" ({flags})".encode() if flags else b""
        tag = await self._send(b"APPEND " + quote(mailbox) + prefix + date + b" {%d}" % len(raw))
        resp = await self._read_response()
        if not resp.startswith(b"+"):
            raise ImapCommandError("The IMAP server refused APPEND.")
        assert self._writer is not None
        self._writer.write(raw + b"\r\n")
        await self._writer.drain()
        while True:
            resp = await self._read_response()
            if resp.startswith(tag + b" "):
                if resp[len(tag) + 1 :][:2].upper() != b"OK":
                    raise ImapCommandError("The IMAP server refused APPEND.")
                return resp

    async def uid_expunge(self, uid_set: str) -> None:
        # Without UIDPLUS only a plain EXPUNGE exists; it also removes other \Deleted messages.
        await self.simple(f"UID EXPUNGE {uid_set}" if self.has("UIDPLUS") else "EXPUNGE")

    # -- push -----------------------------------------------------------------------------
    async def notify_set(self, events: str) -> None:
        """NOTIFY SET (RFC 5465): news about other mailboxes comes as `* STATUS` in IDLE."""
        await self._run(b"NOTIFY SET " + events.encode(), name="NOTIFY")

    async def idle(self, max_s: float, *, others: set[str] | None = None) -> int:
        """IDLE (RFC 2177) on the selected mailbox until it changes or `max_s` passes.

        Returns how many change responses (EXISTS, EXPUNGE, FETCH, VANISHED) came, 0 when
        none did. With NOTIFY set, a `* STATUS` about another mailbox adds its name (as the
        server spells it) to `others` and ends the IDLE too. IDLE always ends with DONE and
        its tagged answer, so the connection is ready for the next command when this returns.
        """
        news = _News(others)
        if not self.has("IDLE"):
            raise ProviderPermanentError("The IMAP server does not offer IDLE.")
        self._keepalive()
        self._command = "IDLE"
        tag = await self._send(b"IDLE")
        resp = await self._read_response()
        while not resp.startswith(b"+"):  # untagged news may come before the continuation
            self._idle_answer(tag, resp)
            news.add(resp)
            resp = await self._read_response()
        # Wait for news without a read timeout of its own: `max_s` is the limit. The read is
        # never cancelled half-way (that would lose a partial response): it goes on after
        # DONE and gets the rest of the answer.
        self._wait = max_s + self.config.timeout
        pending = asyncio.ensure_future(self._read_response())
        try:
            deadline = asyncio.get_running_loop().time() + max_s
            while not news:
                left = deadline - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait({pending}, timeout=max(left, 0))
                if not done:
                    break
                resp = pending.result()
                self._idle_answer(tag, resp)
                news.add(resp)
                pending = asyncio.ensure_future(self._read_response())
            await self._send_raw(b"DONE\r\n")
            await self._idle_end(tag, pending, news)
            return news.changes
        finally:
            self._wait = None
            if not pending.done():
                pending.cancel()
                self._drop()  # half a response may be in flight: this connection is over
            elif not pending.cancelled():
                pending.exception()  # retrieved: asyncio would warn about it otherwise

    def _keepalive(self) -> None:
        """TCP keepalive (~2 min to notice): a long IDLE must see a peer gone without a FIN,
        e.g. a NAT that forgot the connection, before the next re-issue of IDLE."""
        sock = self._writer.get_extra_info("socket") if self._writer is not None else None
        if sock is None:
            return
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)

    async def _idle_end(self, tag: bytes, pending: asyncio.Future[bytes], news: _News) -> None:
        """After DONE: the server's last news and its tagged OK, within the normal timeout."""
        try:
            for _ in range(MAX_IDLE_TAIL):
                try:
                    resp = await asyncio.wait_for(asyncio.shield(pending), self.config.timeout)
                except TimeoutError:
                    raise self._lost(f"did not answer DONE for {self.config.timeout:g}s") from None
                if resp.startswith(tag + b" "):
                    self._idle_answer(tag, resp)
                    return
                self._idle_answer(tag, resp)
                news.add(resp)
                self._wait = None
                pending = asyncio.ensure_future(self._read_response())
            raise self._violation(f"sent more than {MAX_IDLE_TAIL} responses after DONE")
        finally:
            if not pending.done():  # a read left half-way: the connection cannot go on
                pending.cancel()
                self._drop()

    def _idle_answer(self, tag: bytes, resp: bytes) -> None:
        """Raise for a refusal of IDLE or a BYE; anything else is news or noise."""
        if resp.startswith(tag + b" "):
            rest = resp[len(tag) + 1 :]
            if rest[:2].upper() != b"OK":
                raise ImapCommandError(f"The IMAP server refused IDLE{_status_words(rest)}.")
        elif resp[:5].upper() == b"* BYE":
            raise self._lost("said BYE")

    async def _send_raw(self, data: bytes) -> None:
        if self._writer is None:
            raise self._lost("is not connected")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError):
            raise self._lost("closed the connection") from None


# Untagged responses after DONE that we read before giving up on a server.
MAX_IDLE_TAIL = 100_000
_CHANGE = re.compile(rb"\* (?:\d+ (?:EXISTS|EXPUNGE|FETCH)|VANISHED)\b", re.IGNORECASE)


# Other mailboxes named in NOTIFY news, kept per IDLE (a server cannot grow it without end).
MAX_NOTIFIED_MAILBOXES = 1000
# Longer mailbox names in NOTIFY news are dropped (services/imap/push.py does the same).
MAX_NOTIFIED_NAME_BYTES = 1024


class _News:
    """What one IDLE heard: changes to the selected mailbox, names of other changed ones."""

    def __init__(self, others: set[str] | None) -> None:
        self.changes = 0
        self.others = others if others is not None else set()

    def __bool__(self) -> bool:
        return bool(self.changes or self.others)

    def add(self, resp: bytes) -> None:
        """Count a change (RFC 3501 7.3-7.4, RFC 7162) or note a mailbox (RFC 5465 STATUS)."""
        if _CHANGE.match(resp):
            self.changes += 1
        elif resp[:9].upper() == b"* STATUS " and len(self.others) < MAX_NOTIFIED_MAILBOXES:
            try:
                items = parse_items(resp, 9)
            except ImapProtocolError:
                return  # news we cannot read is no news; the periodic sync still runs
            if items and isinstance(items[0], (bytes, str)) and items[0]:
                name = items[0]
                if len(name) > MAX_NOTIFIED_NAME_BYTES:
                    return  # not a folder we sync; 1,000 such names would hold a gigabyte
                self.others.add(
                    name.decode("utf-8", "replace") if isinstance(name, bytes) else name
                )
