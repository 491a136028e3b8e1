"""Raw RFC 822 bytes -> message columns. Never raises: what cannot be read becomes a warning."""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import Header, decode_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from services.messages.html_text import html_to_text
from services.reports.detect import detect as detect_report

SNIPPET_CHARS = 200
# Bodies past this are cut (and say so): a multi-megabyte text part is an attachment in disguise.
MAX_BODY_CHARS = 2_000_000
# A header value past this is cut before RFC 2047 decoding and address parsing: both are linear
# but slow per character (a few seconds per MB), and a References header of hundreds of ids
# still fits easily.
MAX_HEADER_CHARS = 64 * 1024
# The stdlib parser checks every line against every enclosing boundary: nesting depth d costs
# O(lines x d), quadratic for a message nested thousands deep. Real mail nests a few levels
# (and _leaves reads 20); boundaries past this many are disabled before parsing, so those parts
# read as plain bodies.
MAX_BOUNDARIES = 50
_BOUNDARY_PARAM = re.compile(rb"boundary(?=\s*+=)", re.IGNORECASE)
# The standard library reads a header's parameters (boundary, charset, name, filename) in time
# that grows with the square of the header: it re-slices the rest of the value at every `;`.
# A Content-Type of 640 KB of `; a=b` took 3.7 s. No parameter anyone sends needs more than the
# first MAX_PARAM_HEADER bytes of its header, so a longer Content-Type or Content-Disposition
# (a line and its folded continuations; possessive, so the match is linear) is cut there
# before the parser sees it.
MAX_PARAM_HEADER = 1000
# What a cut header keeps besides its type: the parameters postroom reads (first of each).
_KEPT_PARAM = re.compile(
    rb"(?<![\w-])(boundary|charset|name|filename)\s*+=\s*+(\"[^\"\r\n]{0,200}\"|[^;\s\"]{1,200})",
    re.IGNORECASE,
)
_PARAM_HEADER = re.compile(
    rb"^content-(?:type|disposition):[^\r\n]*+(?:\r?\n[ \t][^\r\n]*+)*+",
    re.IGNORECASE | re.MULTILINE,
)
_FALLBACKS = ("utf-8", "cp1252", "latin-1")
# Labels mail software writes that Python's codecs do not know under that name.
_ALIASES = {
    "x-unknown": "",
    "unknown-8bit": "",
    "default": "",
    "x-user-defined": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ascii": "utf-8",
    "us-ascii": "utf-8",
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
}
_MSGID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile(r"[\x00]")
# A whitespace run holding a line break with more whitespace after it: a fold. Tried only where a
# run starts (the lookbehind), so the run is read once; the old `\s*\r?\n\s+` was retried from
# every space of a long run and cost quadratic time.
_FOLD = re.compile(r"(?<!\s)[^\S\n]*+\n\s++")
# RFC 5322 unfolding: a line break followed by a space or tab is removed, the space kept.
_LINE_BREAK_IN_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WELL_FORMED_ID = re.compile(r"<[^<>\s]++>")
# Past this, a Message-ID is no id (RFC 5322 lines stop at 998); the cap keeps the value inside a
# btree index entry, so a hostile header cannot make the message's INSERT fail.
MAX_MESSAGE_ID_CHARS = 998
# Every character str.splitlines() splits on: the stdlib refuses a header value holding one
# ("Header values may not contain linefeed or carriage return characters"), so a stored
# Message-ID with one would make every reply to it (In-Reply-To, References) fail.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def without_line_breaks(value: str) -> str:
    """`value` without any character that str.splitlines() would split on."""
    return _LINE_BREAKS.sub("", value)


@dataclass
class ParsedAttachment:
    filename: str | None
    content_type: str
    size: int
    sha256: str
    content_id: str | None
    is_inline: bool
    content: bytes


@dataclass
class ParsedMessage:
    message_id_header: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    from_name: str | None = None
    from_email: str | None = None
    to_addrs: list[dict[str, Any]] = field(default_factory=list)
    cc_addrs: list[dict[str, Any]] = field(default_factory=list)
    bcc_addrs: list[dict[str, Any]] = field(default_factory=list)
    reply_to: list[dict[str, Any]] = field(default_factory=list)
    subject: str | None = None
    date: datetime | None = None
    text: str | None = None
    html: str | None = None
    snippet: str | None = None
    headers: list[list[str]] = field(default_factory=list)
    size: int = 0
    attachments: list[ParsedAttachment] = field(default_factory=list)
    parse_warnings: list[str] = field(default_factory=list)
    # The delivery report this message is (services/reports), or None for ordinary mail.
    report: dict[str, Any] | None = None

    @property
    def has_attachments(self) -> bool:
        return any(not a.is_inline for a in self.attachments)

    def columns(self) -> dict[str, Any]:
        """The `message` columns this parse fills (attachments go to their own table)."""
        values = asdict(self)
        values.pop("attachments")
        values["has_attachments"] = self.has_attachments
        return values


def clean(text: str) -> str:
    """PostgreSQL text and JSONB refuse NUL characters."""
    return _CONTROL.sub("", text)


def decode_bytes(data: bytes, charset: str | None, warnings: list[str]) -> str:
    """Bytes -> str by the declared charset, then utf-8, cp1252, latin-1 (which never fails)."""
    label = (charset or "").strip().strip('"').lower()
    name = _ALIASES.get(label, label)
    tried: list[str] = []
    if name:
        try:
            codecs.lookup(name)
            tried.append(name)
        except LookupError:
            warnings.append(f"unknown charset {label[:40]!r}")
    for enc in [*tried, *(f for f in _FALLBACKS if f not in tried)]:
        try:
            text = data.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
        if tried and enc != tried[0]:
            warnings.append(f"text is not valid {tried[0]}; decoded as {enc}")
        return clean(text)
    return clean(data.decode("latin-1"))  # unreachable: latin-1 maps every byte


def decode_header_value(value: Any, warnings: list[str]) -> str:
    """An RFC 2047 header value -> str; raw 8-bit headers are decoded like bodies."""
    if value is None:
        return ""
    if not isinstance(value, (str, Header)):
        value = str(value)
    if isinstance(value, str) and len(value) > MAX_HEADER_CHARS:
        warnings.append(f"header value cut at {MAX_HEADER_CHARS} characters")
        value = value[:MAX_HEADER_CHARS]
    try:
        chunks = decode_header(value)
    except Exception:  # a malformed encoded-word: keep the raw text
        warnings.append("malformed encoded-word in a header")
        return clean(str(value))
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset, warnings))
        else:
            out.append(chunk)
    # decode_header drops the whitespace between plain and encoded parts; join as RFC 2047 says.
    text = "".join(out) if len(chunks) > 1 else (out[0] if out else "")
    # Raw 8-bit bytes in a str header arrive as lone surrogates, which UTF-8 cannot store.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return clean(_FOLD.sub(" ", text)).strip()


def _addresses(msg: Message, name: str, warnings: list[str]) -> list[dict[str, Any]]:
    values = [decode_header_value(v, warnings) for v in msg.get_all(name, [])]
    out = []
    for display, email in getaddresses(values):
        if email or display:
            out.append({"name": display or None, "email": email.strip()[:320] or None})
    return out


def _message_ids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _only_comments(rest: str) -> bool:
    """True when `rest` is whitespace and parenthesised comments (nested, with quoted pairs)."""
    depth = 0
    escaped = False
    for char in rest:
        if escaped:
            escaped = False
        elif depth and char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and not char.isspace():
            return False
    return depth == 0


def message_id_value(value: object) -> str | None:
    """The Message-ID header's value as stored: unfolded and trimmed, even when malformed (never
    an id picked out of its middle); `<id> (a comment)` is `<id>`. None only without a header.
    """
    if value is None:
        return None
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    text = without_line_breaks(clean(_LINE_BREAK_IN_FOLD.sub("", text))).strip()
    well_formed = _WELL_FORMED_ID.match(text)
    if well_formed and _only_comments(text[well_formed.end() :]):
        text = well_formed.group()
    # Characters, then UTF-8 bytes: an index entry holds about 2,700 bytes.
    text = text[:MAX_MESSAGE_ID_CHARS]
    return text.encode("utf-8")[: 2 * MAX_MESSAGE_ID_CHARS].decode("utf-8", "ignore")


def message_id_of_header_block(block: bytes) -> str | None:
    """The Message-ID of a header block (as IMAP's BODY[HEADER.FIELDS (MESSAGE-ID)] returns it),
    read exactly as `parse` reads it, so the two always agree on the value."""
    try:
        msg = message_from_bytes(block, policy=compat32)
    except Exception:  # the stdlib parser is lenient; this is a last resort
        return None
    return message_id_value(msg.get("Message-ID"))


def _date(value: str | None, warnings: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        warnings.append("unreadable Date header")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1970 <= parsed.year <= 2100:
        warnings.append("Date header out of range")
        return None
    return parsed


def _payload(part: Message, warnings: list[str]) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        warnings.append("undecodable transfer encoding")
        data = None
    if data is None:
        raw = part.get_payload()
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    for defect in getattr(part, "defects", []):
        warnings.append(f"{type(defect).__name__}")
    return data if isinstance(data, bytes) else bytes(data)


def _leaves(msg: Message, warnings: list[str], depth: int = 0) -> list[Message]:
    """Leaf parts in order; an attached message/rfc822 is one leaf, not opened."""
    if depth > 20:
        warnings.append("MIME nesting too deep; inner parts skipped")
        return []
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        payload = msg.get_payload()
        if not isinstance(payload, list) or not payload:
            warnings.append("multipart without parts")
            return []
        out: list[Message] = []
        for sub in payload:
            if isinstance(sub, Message):
                out.extend(_leaves(sub, warnings, depth + 1))
        return out
    return [msg]


def _attachment(part: Message, data: bytes, warnings: list[str]) -> ParsedAttachment:
    filename = part.get_filename()
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    cid = part.get("Content-ID")
    return ParsedAttachment(
        filename=decode_header_value(filename, warnings) or None if filename else None,
        content_type=part.get_content_type()[:255],
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_id=(cid.strip().strip("<>") or None) if isinstance(cid, str) else None,
        is_inline=disposition == "inline" or (disposition != "attachment" and bool(cid)),
        content=data,
    )


def _bodies(msg: Message, parsed: ParsedMessage) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    warnings = parsed.parse_warnings
    for part in _leaves(msg, warnings):
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        data = _payload(part, warnings)
        named = bool(part.get_filename())
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not named:
            body = decode_bytes(data, part.get_content_charset(), warnings)
            (htmls if ctype == "text/html" else texts).append(body)
        else:
            parsed.attachments.append(_attachment(part, data, warnings))
    parsed.text = _cap("\n".join(texts), warnings) if texts else None
    parsed.html = _cap("\n".join(htmls), warnings) if htmls else None


def _cap(body: str, warnings: list[str]) -> str:
    if len(body) > MAX_BODY_CHARS:
        warnings.append(f"body cut at {MAX_BODY_CHARS} characters")
        return body[:MAX_BODY_CHARS]
    return body


def _limit_boundaries(raw: bytes, warnings: list[str]) -> bytes:
    """Rename `boundary=` parameters past MAX_BOUNDARIES, so the parser never nests deeper."""
    if len(_BOUNDARY_PARAM.findall(raw)) <= MAX_BOUNDARIES:
        return raw
    warnings.append(f"more than {MAX_BOUNDARIES} MIME boundaries; the rest read as text")
    seen = 0

    def rename(match: re.Match[bytes]) -> bytes:
        nonlocal seen
        seen += 1
        return match.group() if seen <= MAX_BOUNDARIES else b"x-ignored-boundary"

    return _BOUNDARY_PARAM.sub(rename, raw)


def trim_param_headers(raw: bytes, warnings: list[str]) -> bytes:
    """Cut Content-Type and Content-Disposition headers longer than MAX_PARAM_HEADER bytes."""
    cut = False

    def trim(match: re.Match[bytes]) -> bytes:
        nonlocal cut
        value = match.group()
        if len(value) <= MAX_PARAM_HEADER:
            return value
        cut = True
        # The type (before the first `;`) and the parameters postroom reads survive the cut, so
        # a multipart keeps its parts and a text its charset.
        kept: dict[bytes, bytes] = {}
        for param in _KEPT_PARAM.finditer(value):
            kept.setdefault(param.group(1).lower(), param.group())
        head = value.split(b";", 1)[0][: MAX_PARAM_HEADER // 2]
        return b"; ".join([head, *kept.values()])

    raw = _PARAM_HEADER.sub(trim, raw)
    if cut:
        warnings.append(f"a Content-Type or Content-Disposition cut at {MAX_PARAM_HEADER} bytes")
    return raw


def parse(raw: bytes) -> ParsedMessage:
    """Parse one message; a broken one yields what could be read plus `parse_warnings`."""
    parsed = ParsedMessage(size=len(raw))
    warnings = parsed.parse_warnings
    raw = trim_param_headers(_limit_boundaries(raw, warnings), warnings)
    try:
        msg = message_from_bytes(raw, policy=compat32)
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        warnings.append(f"unparseable message ({type(exc).__name__})")
        parsed.text = decode_bytes(raw, None, warnings)
        return parsed
    for defect in msg.defects:
        warnings.append(type(defect).__name__)
    try:
        _headers(msg, parsed)
    except Exception as exc:
        warnings.append(f"headers partly unreadable ({type(exc).__name__})")
    try:
        _bodies(msg, parsed)
    except Exception as exc:
        warnings.append(f"body partly unreadable ({type(exc).__name__})")
    source = parsed.text or (html_to_text(parsed.html) if parsed.html else "")
    try:
        found = detect_report(
            msg,
            from_email=parsed.from_email,
            from_name=parsed.from_name,
            subject=parsed.subject,
            text=source,
        )
        parsed.report = found.stored() if found is not None else None
    except Exception as exc:  # a report that cannot be read leaves the mail ordinary
        warnings.append(f"delivery report unreadable ({type(exc).__name__})")
    parsed.snippet = " ".join(source.split())[:SNIPPET_CHARS] or None
    # Keep order, drop repeats: one defect can be reported by every part.
    parsed.parse_warnings = list(dict.fromkeys(warnings))[:50]
    return parsed


def _headers(msg: Message, parsed: ParsedMessage) -> None:
    warnings = parsed.parse_warnings
    parsed.headers = [[clean(str(k)), decode_header_value(v, warnings)] for k, v in msg.items()]
    parsed.subject = decode_header_value(msg.get("Subject"), warnings) or None
    sender = _addresses(msg, "From", warnings)
    if sender:
        parsed.from_name = sender[0]["name"]
        parsed.from_email = sender[0]["email"]
    parsed.to_addrs = _addresses(msg, "To", warnings)
    parsed.cc_addrs = _addresses(msg, "Cc", warnings)
    parsed.bcc_addrs = _addresses(msg, "Bcc", warnings)
    parsed.reply_to = _addresses(msg, "Reply-To", warnings)
    parsed.message_id_header = message_id_value(msg.get("Message-ID"))
    reply = _message_ids(str(msg.get("In-Reply-To") or ""))
    parsed.in_reply_to = reply[0] if reply else None
    parsed.references = _message_ids(str(msg.get("References") or ""))[:100]
    parsed.date = _date(msg.get("Date"), warnings)
