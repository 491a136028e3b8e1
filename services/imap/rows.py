"""One fetched IMAP message -> its `message` row and attachment rows.

Never raises: a message that is too large, explodes into parts, cannot be parsed or came back
as garbage is stored with ONE `problem` sentence (ours, never its contents), a log line and a
metric, so the batch around it commits and the folder's sync state moves on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from database.models import Account, Folder
from services.imap.protocol import number
from services.imap.sync_steps import flag_values, modseq_of
from services.messages.mime import ParsedMessage, parse
from services.metrics import IMAP_PROBLEMS

# Attachments kept per message: a mail of 10,000 parts is stored, its first 1,000 parts with it.
MAX_ATTACHMENTS = 1000
# Lines that may open a MIME part (`--boundary`) before the parser is even tried: the stdlib
# parser holds an object per part, so 1.7 million 30-byte parts (50 MB) would take gigabytes
# and minutes; past this only the header is read. 50,000 parts parse in about 10 s.
MAX_MIME_PARTS = 50_000
_MAX_INT32 = 2**31 - 1

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Problem:
    reason: str  # metric label
    text: str  # the sentence stored on the message


def provider_id(folder_name: str, uidvalidity: int, uid: int) -> str:
    """A stored IMAP message's key in its account: a UID means something in one folder
    generation only."""
    return f"{folder_name}:{uidvalidity}:{uid}"


def _internaldate(value: Any) -> datetime | None:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    try:
        return datetime.strptime(str(text), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def declared_size(attrs: dict[str, Any]) -> int | None:
    """RFC822.SIZE of a FETCH answer, or None when absent or unreadable."""
    try:
        return number(attrs.get("RFC822.SIZE"))
    except ValueError:
        return None


def safe(value: Any) -> Any:
    """Strings PostgreSQL accepts: no NUL, no lone surrogates (8-bit header bytes)."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [safe(v) for v in value]
    if isinstance(value, dict):
        return {k: safe(v) for k, v in value.items()}
    return value


def _parse(raw: bytes) -> tuple[ParsedMessage, Problem | None]:
    try:
        return parse(raw), None
    except Exception as exc:  # mime.parse is meant never to raise; a last net
        problem = Problem("parse_failed", f"the message could not be parsed ({type(exc).__name__})")
        return ParsedMessage(size=len(raw)), problem


def _body(attrs: dict[str, Any], headers_only: bool) -> bytes | None:
    wanted = "BODY[HEADER]" if headers_only else "BODY[]"
    raw = attrs.get(wanted)
    return raw if isinstance(raw, bytes) else None


def build(
    *,
    account: Account,
    folder: Folder,
    uidvalidity: int,
    attrs: dict[str, Any],
    headers_only: bool,
    cap: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], Problem | None]:
    """The row, its attachments and the message's problem (None for a good message)."""
    uid = attrs["UID"]
    problem: Problem | None = None
    raw = _body(attrs, headers_only)
    if "PROBLEM" in attrs:
        problem = Problem("unreadable", str(attrs["PROBLEM"]))
    elif raw is None:
        problem = Problem("no_body", "the server sent no content for this message")
    full_size = len(raw) if raw is not None else None
    exploded = raw is not None and not headers_only and raw.count(b"\n--") > MAX_MIME_PARTS
    if exploded and raw is not None:
        raw = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0] + b"\r\n\r\n"
        problem = problem or Problem(
            "too_many_parts",
            f"the message has more than {MAX_MIME_PARTS} MIME parts: only its header is stored",
        )
    parsed, parse_problem = _parse(raw) if raw is not None else (ParsedMessage(), None)
    problem = problem or parse_problem
    size = declared_size(attrs) if headers_only else full_size
    if headers_only or exploded:
        # The header's blank line is no body: the text stays unknown, not empty, and no
        # attachment comes from it.
        parsed.text = parsed.html = parsed.snippet = None
        parsed.attachments.clear()
        problem = problem or Problem(
            "too_large",
            f"the message is {size if size is not None else 'declared'} bytes, over the "
            f"{cap}-byte cap: only its header is stored",
        )
    if len(parsed.attachments) > MAX_ATTACHMENTS:
        problem = problem or Problem(
            "too_many_parts",
            f"the message has {len(parsed.attachments)} attachments: the first "
            f"{MAX_ATTACHMENTS} are stored",
        )
        del parsed.attachments[MAX_ATTACHMENTS:]
    msg_id = uuid.uuid4()
    values = safe(parsed.columns())
    values.update(
        id=msg_id,
        tenant_id=account.tenant_id,
        account_id=account.id,
        folder_id=folder.id,
        provider_id=provider_id(folder.name, uidvalidity, uid),
        imap_uid=uid,
        uidvalidity=uidvalidity,
        modseq=modseq_of(attrs),
        labels=[folder.name],
        sort_at=parsed.date or _internaldate(attrs.get("INTERNALDATE")) or datetime.now(UTC),
        too_large=headers_only,
        # The declared size, not the header's: `message.size` is 32-bit, so a claimed 10 GB
        # is recorded as unknown.
        size=size if size is not None and size <= _MAX_INT32 else None,
        problem=problem.text if problem else None,
        **flag_values(attrs.get("FLAGS")),
    )
    atts = [
        {
            "id": uuid.uuid4(),
            "tenant_id": account.tenant_id,
            "message_id": msg_id,
            "filename": safe(a.filename),
            "content_type": safe(a.content_type),
            "size": a.size,
            "sha256": a.sha256,
            "content_id": safe(a.content_id),
            "is_inline": a.is_inline,
            "content": a.content,
        }
        for a in parsed.attachments
    ]
    return values, atts, problem


def unstorable(values: dict[str, Any], exc: BaseException) -> tuple[dict[str, Any], Problem]:
    """What is left of a row PostgreSQL refused: its keys, flags and dates, plus the problem."""
    problem = Problem("store_failed", f"the message could not be stored ({type(exc).__name__})")
    keep = (
        "id",
        "tenant_id",
        "account_id",
        "folder_id",
        "provider_id",
        "imap_uid",
        "uidvalidity",
        "modseq",
        "labels",
        "sort_at",
        "flags",
        "unread",
        "starred",
        "too_large",
    )
    row = {k: values[k] for k in keep if k in values}
    row["problem"] = problem.text
    return row, problem


def record(problem: Problem, *, account: Account, folder: Folder, uid: int) -> None:
    """The log line and metric of a problem: ids and the reason, never the message."""
    IMAP_PROBLEMS.labels(reason=problem.reason).inc()
    log.warning(
        "imap_message_problem",
        reason=problem.reason,
        tenant_id=str(account.tenant_id),
        account_id=str(account.id),
        folder_id=str(folder.id),
        uid=uid,
    )
