"""Appending a copy of a sent message to the account's IMAP Sent folder (RFC 3501 APPEND).

imaplib in a thread: one short session per send, so it needs no connection state of its own.
Its socket is opened to the address services/destination.py checked, like every IMAP
connection; the host name stays the TLS server name.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services import destination
from services.errors import BadCredentials, PostroomError, TransientError

# RFC 4315: uniqueid is 32-bit; ten digits at most, so no huge int is ever built.
_APPENDUID = re.compile(rb"\[APPENDUID (\d{1,10}) (\d{1,10})\]", re.IGNORECASE)
_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$')
_SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent")


@dataclass(frozen=True)
class Appended:
    folder: str
    uidvalidity: int | None
    uid: int | None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: bytes) -> str:
    text = raw.decode("ascii", "replace").strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


class _PinnedIMAP4(imaplib.IMAP4):
    """imaplib connected to a checked address; `host` (for TLS) stays the name."""

    def __init__(
        self, dest: destination.Destination, context: ssl.SSLContext | None, timeout: float
    ) -> None:
        self._dest = dest
        self._tls = context
        super().__init__(dest.host, dest.port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = destination.connect_socket_sync(self._dest, timeout or 30.0)
        if self._tls is None:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=self._dest.host)
        except BaseException:
            sock.close()
            raise


def _open(imap: dict[str, Any], allowed: str | None) -> imaplib.IMAP4:
    port = int(imap["port"])
    dest = destination.resolve_sync(str(imap["host"]), port, role="IMAP", allowed=allowed)
    security = str(imap.get("security") or "tls").lower()
    ctx = (
        ssl.create_default_context(cadata=imap["ca_pem"])
        if imap.get("ca_pem")
        else ssl.create_default_context()
    )
    if imap.get("verify_tls") is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    conn = _PinnedIMAP4(dest, ctx if security == "tls" else None, timeout=30)
    try:
        if security == "starttls":
            conn.starttls(ssl_context=ctx)
    except BaseException:
        conn.shutdown()
        raise
    try:
        conn.login(str(imap["username"]), str(imap["password"]))
    except (imaplib.IMAP4.error, UnicodeError):  # imaplib sends LOGIN as ASCII only
        conn.shutdown()
        raise BadCredentials("The IMAP server refused the login.") from None
    return conn


def _connect(imap: dict[str, Any], allowed: str | None) -> imaplib.IMAP4:
    """`_open` with every failure in words: never the peer's greeting or the address."""
    try:
        return _open(imap, allowed)
    except PostroomError:
        raise
    except imaplib.IMAP4.abort:  # before IMAP4.error: abort is one of its subclasses
        raise TransientError("Could not reach the IMAP server: the connection broke.") from None
    except imaplib.IMAP4.error:
        # A greeting that is not IMAP's, or a refused STARTTLS: before login, no peer text.
        raise TransientError("The IMAP server did not accept the session before login.") from None
    except (OSError, TimeoutError) as exc:
        kind = destination.failure_kind(exc)
        raise TransientError(f"Could not reach the IMAP server: {kind}.") from None


def _find_sent(conn: imaplib.IMAP4) -> str:
    typ, lines = conn.list()
    names: list[str] = []
    for line in lines if typ == "OK" else []:
        m = _LIST_LINE.match(line) if isinstance(line, bytes) else None
        if not m:
            continue
        name = _unquote(m.group("name"))
        if b"\\sent" in m.group("flags").lower():
            return name
        names.append(name)
    for candidate in _SENT_NAMES:
        if candidate in names:
            return candidate
    conn.create(_quote("Sent"))
    return "Sent"


def _append(
    imap: dict[str, Any], folder: str | None, data: bytes, when: datetime, allowed: str | None
) -> Appended:
    conn = _connect(imap, allowed)
    try:
        name = folder or _find_sent(conn)
        typ, resp = conn.append(_quote(name), r"(\Seen)", imaplib.Time2Internaldate(when), data)
        if typ != "OK":
            raise TransientError("The IMAP server refused to append the sent copy.")
        m = _APPENDUID.search(b" ".join(r for r in resp if isinstance(r, bytes)))
        return Appended(name, int(m.group(1)) if m else None, int(m.group(2)) if m else None)
    except (OSError, imaplib.IMAP4.error) as exc:
        kind = "refused" if not isinstance(exc, OSError) else destination.failure_kind(exc)
        raise TransientError(f"Appending the sent copy failed: {kind}.") from None
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


async def append_sent_copy(
    imap: dict[str, Any],
    *,
    folder: str | None,
    data: bytes,
    when: datetime,
    allowed_private_hosts: str | None = None,
) -> Appended:
    """APPEND `data` as \\Seen to `folder` (or the server's \\Sent folder); UIDPLUS ids if given.

    `allowed_private_hosts`: POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS (None: the process settings).
    """
    return await asyncio.to_thread(_append, imap, folder, data, when, allowed_private_hosts)
