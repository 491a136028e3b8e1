"""Appending a copy of a sent message to the account's IMAP Sent folder (RFC 3501 APPEND).

imaplib in a thread: one short session per send, so it needs no connection state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.errors import BadCredentials, TransientError

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


def _open(imap: dict[str, Any]) -> imaplib.IMAP4:
    host, port = str(imap["host"]), int(imap["port"])
    security = str(imap.get("security") or "tls").lower()
    ctx = (
        ssl.create_default_context(cadata=imap["ca_pem"])
        if imap.get("ca_pem")
        else ssl.create_default_context()
    )
    if imap.get("verify_tls") is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if security == "tls":
        conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
    else:
        conn = imaplib.IMAP4(host, port, timeout=30)
        if security == "starttls":
            conn.starttls(ssl_context=ctx)
    try:
        conn.login(str(imap["username"]), str(imap["password"]))
    except (imaplib.IMAP4.error, UnicodeError):  # imaplib sends LOGIN as ASCII only
        conn.shutdown()
        raise BadCredentials("The IMAP server refused the login.") from None
    return conn


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


def _append(imap: dict[str, Any], folder: str | None, data: bytes, when: datetime) -> Appended:
    try:
        conn = _open(imap)
    except (OSError, imaplib.IMAP4.abort, ssl.SSLError) as exc:
        raise TransientError(f"Could not reach the IMAP server ({type(exc).__name__}).") from None
    try:
        name = folder or _find_sent(conn)
        typ, resp = conn.append(_quote(name), r"(\Seen)", imaplib.Time2Internaldate(when), data)
        if typ != "OK":
            raise TransientError("The IMAP server refused to append the sent copy.")
        m = _APPENDUID.search(b" ".join(r for r in resp if isinstance(r, bytes)))
        return Appended(name, int(m.group(1)) if m else None, int(m.group(2)) if m else None)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise TransientError(f"Appending the sent copy failed ({type(exc).__name__}).") from None
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


async def append_sent_copy(
    imap: dict[str, Any], *, folder: str | None, data: bytes, when: datetime
) -> Appended:
    """APPEND `data` as \\Seen to `folder` (or the server's \\Sent folder); UIDPLUS ids if given."""
    return await asyncio.to_thread(_append, imap, folder, data, when)
