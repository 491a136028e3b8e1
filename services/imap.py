"""A small asyncio IMAP client: exactly the commands sync and delete need, with clear errors.

One command at a time; FETCH results are streamed response by response so a large mailbox
never sits in memory. A server that hangs up or stalls mid-command is a TransientError;
a refused login is BadCredentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services import destination
from services.errors import BadCredentials, ProviderPermanentError, ProviderTemporaryError
from services.imap_protocol import (
    decode_mutf7,
    literal_size,
    pairs,
    parse_items,
    parse_uid_set,
    quote,
    response_codes,
)

SPECIAL_USE = {
    "\\sent": "sent",
    "\\trash": "trash",
    "\\junk": "junk",
    "\\drafts": "drafts",
    "\\archive": "archive",
    "\\all": "archive",
}
_READ_LIMIT = 64 * 1024 * 1024


_ATOM = re.compile(r"[A-Z][A-Z0-9.-]{0,39}")


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


@dataclass
class ImapConfig:
    host: str
    port: int
    username: str
    password: str
    security: str = "tls"  # none | starttls | tls
    timeout: float = 30.0
    verify_tls: bool = True
    # POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS; None reads it from the process settings.
    allowed_private_hosts: str | None = None

    @classmethod
    def from_credentials(
        cls,
        data: dict[str, Any],
        *,
        timeout: float = 30.0,
        allowed_private_hosts: str | None = None,
    ) -> ImapConfig:
        imap = data.get("imap") or {}
        return cls(
            host=imap["host"],
            port=int(imap["port"]),
            username=imap["username"],
            password=imap["password"],
            security=imap.get("security", "tls"),
            timeout=timeout,
            verify_tls=bool(imap.get("verify_tls", True)),
            allowed_private_hosts=allowed_private_hosts,
        )


@dataclass
class MailboxInfo:
    name: str  # as on the wire (modified UTF-7)
    display_name: str
    delimiter: str | None
    flags: list[str]
    role: str | None
    status: dict[str, int] = field(default_factory=dict)

    @property
    def selectable(self) -> bool:
        return "\\noselect" not in self.flags and "\\nonexistent" not in self.flags


@dataclass
class SelectInfo:
    uidvalidity: int
    uidnext: int | None
    highest_modseq: int | None
    exists: int
    vanished: list[int] = field(default_factory=list)


class ImapClient:
    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self.capabilities: set[str] = set()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tag = 0
        self._command = "CONNECT"
        self._enabled = False

    # -- connection ---------------------------------------------------------------------
    async def connect(self) -> ImapClient:
        cfg = self.config
        context = self._ssl_context() if cfg.security in ("tls", "starttls") else None
        # Checked here, at every connection, and connected to the address that was checked.
        dest = await destination.resolve(
            cfg.host, cfg.port, role="IMAP", allowed=cfg.allowed_private_hosts
        )
        try:
            self._reader, self._writer = await self._open(dest, context)
        except (OSError, TimeoutError) as exc:
            # Only what failed: never the address, the port or the peer's words.
            raise ProviderTemporaryError(
                f"Could not connect to the IMAP server: {destination.failure_kind(exc)}."
            ) from None
        try:
            await self._handshake(context, dest.host)
            await self._login()
        except ImapCommandError:
            self._drop()
            # Before login the peer is not known to be the tenant's server: none of its words.
            raise ProviderPermanentError(
                f"The IMAP server refused {self._command} before login."
            ) from None
        except (OSError, TimeoutError) as exc:  # STARTTLS: the handshake or the socket
            self._drop()
            raise ProviderTemporaryError(
                f"Could not connect to the IMAP server: {destination.failure_kind(exc)}."
            ) from None
        except BaseException:
            self._drop()
            raise
        return self

    def _drop(self) -> None:
        """Close a connection that never got to LOGIN's end (no LOGOUT to a stranger)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _open(
        self, dest: destination.Destination, context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        cfg = self.config
        sock = await destination.connect_socket(dest, cfg.timeout)
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(
                    sock=sock,
                    limit=_READ_LIMIT,
                    ssl=context if cfg.security == "tls" else None,
                    server_hostname=dest.host if cfg.security == "tls" else None,
                ),
                cfg.timeout,
            )
        except BaseException:
            sock.close()
            raise

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

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.config.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _login(self) -> None:
        cfg = self.config
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

    async def _readline(self) -> bytes:
        assert self._reader is not None
        try:
            line = await asyncio.wait_for(self._reader.readuntil(b"\r\n"), self.config.timeout)
        except asyncio.IncompleteReadError:
            raise self._lost("closed the connection") from None
        except TimeoutError:  # before OSError: TimeoutError is one of its subclasses
            raise self._lost(f"did not answer for {self.config.timeout:g}s") from None
        except (ConnectionError, OSError):
            raise self._lost("reset the connection") from None
        except asyncio.LimitOverrunError:
            raise self._lost("sent an over-long line") from None
        return line

    async def _read_response(self) -> bytes:
        assert self._reader is not None
        line = await self._readline()
        size = literal_size(line)
        if size is None:
            return line
        parts = [line]
        while size is not None:
            try:
                parts.append(
                    await asyncio.wait_for(self._reader.readexactly(size), self.config.timeout)
                )
            except asyncio.IncompleteReadError:
                raise self._lost("closed the connection") from None
            except TimeoutError:
                raise self._lost(f"did not answer for {self.config.timeout:g}s") from None
            except (ConnectionError, OSError):
                raise self._lost("reset the connection") from None
            line = await self._readline()
            parts.append(line)
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

    async def _stream(self, line: bytes, *, name: str) -> AsyncIterator[bytes]:
        """Send a command; yield its untagged responses; raise on NO/BAD. Last yield: status."""
        self._command = name
        tag = await self._send(line)
        bye = False
        while True:
            resp = await self._read_response()
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
        untagged: list[bytes] = []
        status = b""
        async for resp in self._stream(line, name=name):
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
        boxes: dict[str, MailboxInfo] = {}
        statuses: dict[str, dict[str, int]] = {}
        for resp in untagged:
            head = resp[:9].upper()
            if head.startswith(b"* LIST "):
                flags, delim, name = parse_items(resp, 7)[:3]
                wire = name.decode() if isinstance(name, bytes) else str(name)
                lower = [str(f).lower() for f in flags]
                role = (
                    "inbox"
                    if wire.upper() == "INBOX"
                    else next((SPECIAL_USE[f] for f in lower if f in SPECIAL_USE), None)
                )
                boxes[wire] = MailboxInfo(
                    name=wire,
                    display_name=decode_mutf7(wire),
                    flags=lower,
                    role=role,
                    delimiter=delim.decode() if isinstance(delim, bytes) else delim,
                )
            elif head.startswith(b"* STATUS "):
                name, values = parse_items(resp, 9)[:2]
                wire = name.decode() if isinstance(name, bytes) else str(name)
                statuses[wire] = {str(k).upper(): int(v) for k, v in pairs(values).items()}
        for wire, st in statuses.items():
            if wire in boxes:
                boxes[wire].status = st
        return list(boxes.values())

    async def select(self, mailbox: str, *, readonly: bool = False) -> SelectInfo:
        await self._enable()
        verb = "EXAMINE" if readonly else "SELECT"
        suffix = b" (CONDSTORE)" if self.has("CONDSTORE") else b""
        untagged, status = await self._run(
            verb.encode() + b" " + self._astring(mailbox) + suffix, name=verb
        )
        info = SelectInfo(uidvalidity=0, uidnext=None, highest_modseq=None, exists=0)
        for resp in [*untagged, status]:
            codes = response_codes(resp)
            if "UIDVALIDITY" in codes:
                info.uidvalidity = int(codes["UIDVALIDITY"])
            if "UIDNEXT" in codes:
                info.uidnext = int(codes["UIDNEXT"])
            if "HIGHESTMODSEQ" in codes:
                info.highest_modseq = int(codes["HIGHESTMODSEQ"])
            parts = resp.split()
            if len(parts) >= 3 and parts[2].upper() == b"EXISTS":
                info.exists = int(parts[1])
        return info

    async def uid_search(self, criteria: str) -> list[int]:
        untagged, _ = await self.simple(f"UID SEARCH {criteria}")
        uids: list[int] = []
        for resp in untagged:
            if resp.upper().startswith(b"* SEARCH"):
                uids.extend(int(x) for x in resp[8:].split() if x.isdigit())
        return uids

    async def uid_fetch(
        self,
        uid_set: str,
        items: str,
        *,
        changed_since: int | None = None,
        vanished: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `{"UID": .., "FLAGS": .., ...}` per message; `{"VANISHED": [uids]}` too."""
        modifiers = ""
        if changed_since is not None:
            modifiers = f" (CHANGEDSINCE {changed_since}{' VANISHED' if vanished else ''})"
        line = f"UID FETCH {uid_set} ({items}){modifiers}".encode()
        async for resp in self._stream(line, name="UID FETCH"):
            if resp.startswith(b"* ") and b" FETCH (" in resp[:40].upper():
                start = resp.index(b"(")
                attrs = pairs(parse_items(resp, start)[0])
                if "UID" in attrs:
                    attrs["UID"] = int(attrs["UID"])
                    yield attrs
            elif resp.upper().startswith(b"* VANISHED"):
                text = resp[10:].strip().decode()
                text = text.removeprefix("(EARLIER)").strip()
                yield {"VANISHED": parse_uid_set(text)}

    async def uid_store(self, uid_set: str, change: str) -> None:
        await self.simple(f"UID STORE {uid_set} {change}")

    async def uid_move(self, uid_set: str, target: str) -> None:
        await self._run(f"UID MOVE {uid_set} ".encode() + self._astring(target), name="UID MOVE")

    async def uid_copy(self, uid_set: str, target: str) -> None:
        await self._run(f"UID COPY {uid_set} ".encode() + self._astring(target), name="UID COPY")

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

    async def _append_one(self, mailbox: str, raw: bytes, flags: str) -> None:
        # A synchronizing literal: wait for the server's "+" before sending the message.
        self._command = "APPEND"
        prefix = f" ({flags})".encode() if flags else b""
        tag = await self._send(b"APPEND " + quote(mailbox) + prefix + b" {%d}" % len(raw))
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
                return

    async def uid_expunge(self, uid_set: str) -> None:
        # Without UIDPLUS only a plain EXPUNGE exists; it also removes other \Deleted messages.
        await self.simple(f"UID EXPUNGE {uid_set}" if self.has("UIDPLUS") else "EXPUNGE")
