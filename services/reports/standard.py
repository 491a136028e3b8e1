"""The standard report formats: RFC 3464 delivery status notifications and RFC 5965 abuse
reports (ARF), both carried in a multipart/report (RFC 6522)."""

from __future__ import annotations

from email.message import Message

from services.reports import classify
from services.reports.fields import (
    address_in,
    blocks_of,
    embedded_headers,
    message_id_in,
    one_line,
    part_text,
)
from services.reports.model import MAX_RECIPIENTS, Recipient, Report

DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
FEEDBACK_TYPES = ("message/feedback-report",)
ORIGINAL_TYPES = (
    "message/rfc822",
    "text/rfc822-headers",
    "message/global",
    "message/global-headers",
)
_ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded"}


def _parts(msg: Message, limit: int = 50) -> list[Message]:
    """The leaf parts (a message/* part is one leaf), breadth-limited."""
    out: list[Message] = []
    todo = [(msg, 0)]
    while todo and len(out) < limit:
        part, depth = todo.pop(0)
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            if depth < 5:
                todo.extend((p, depth + 1) for p in payload[:limit] if isinstance(p, Message))
            continue
        inner = payload[0] if isinstance(payload, list) and payload else None
        if (
            part.get_content_type() == "message/rfc822"
            and isinstance(inner, Message)
            and inner.get_content_type() == "multipart/report"
            and depth < 5
        ):
            # A gateway that forwards the DSN it received as an attachment (InterScan).
            todo.append((inner, depth + 1))
            continue
        out.append(part)
    return out


def _original(parts: list[Message]) -> Message | None:
    for part in parts:
        if part.get_content_type() in ORIGINAL_TYPES:
            found = embedded_headers(part)
            if found is not None:
                return found
    return None


def _status(value: str | None) -> str | None:
    return classify.find_status(value)


def _recipient(block: dict[str, str], fallback_text: str | None) -> Recipient | None:
    # Original-Recipient is the address as the sender gave it (RFC 3464 2.3.1): what a send
    # went to. Final-Recipient may be a rewrite (an alias, a forward, a local mailbox).
    email = address_in(block.get("original-recipient")) or address_in(block.get("final-recipient"))
    if email is None:
        return None
    action = (block.get("action") or "").strip().lower().split(" ")[0] or None
    if action not in _ACTIONS:
        action = None
    diagnostic = one_line(block.get("diagnostic-code"))
    if diagnostic and ";" in diagnostic[:20]:
        diagnostic = diagnostic.split(";", 1)[1].strip() or diagnostic
    status = _status(block.get("status")) or classify.find_status(diagnostic)
    if action is None and status:
        action = {"5": "failed", "4": "delayed", "2": "delivered"}[status[0]]
    if action in ("relayed", "expanded"):
        action = "delivered"
    words = diagnostic or fallback_text
    failure = action in ("failed", "delayed")
    reason = classify.reason_of(status, words) if failure else "undefined"
    permanent = action == "failed" and (status is None or status.startswith("5"))
    return Recipient(
        email=email,
        status=status,
        action=action,
        reason=reason,
        hard=classify.is_hard(reason, permanent),
        diagnostic=diagnostic,
    )


def _kind(recipients: list[Recipient]) -> str:
    actions = {r.action for r in recipients}
    if "failed" in actions or not actions - {None}:
        return "bounce"
    if "delayed" in actions:
        return "delay"
    return "delivered"


def delivery_status(msg: Message, *, text: str | None) -> Report | None:
    """An RFC 3464 report, or None when the message holds no delivery-status part."""
    parts = _parts(msg)
    status_part = next((p for p in parts if p.get_content_type() in DSN_TYPES), None)
    if status_part is None:
        return None
    blocks = blocks_of(part_text(status_part))
    per_message = blocks[0] if blocks else {}
    recipients: list[Recipient] = []
    seen: set[str] = set()
    for block in blocks:
        found = _recipient(block, text)
        if found is not None and found.email not in seen:
            seen.add(found.email)
            recipients.append(found)
            if len(recipients) >= MAX_RECIPIENTS:
                break
    original = _original(parts)
    return Report(
        kind=_kind(recipients),
        recipients=recipients,
        original_message_id=message_id_in(original.get("Message-ID")) if original else None,
        envelope_id=one_line(per_message.get("original-envelope-id"), 200),
    )


def feedback_report(msg: Message) -> Report | None:
    """An RFC 5965 abuse report, or None when the message holds no feedback-report part."""
    parts = _parts(msg)
    part = next((p for p in parts if p.get_content_type() in FEEDBACK_TYPES), None)
    if part is None:
        return None
    fields = blocks_of(part_text(part))
    block = fields[0] if fields else {}
    feedback_type = (one_line(block.get("feedback-type"), 40) or "other").lower()
    original = _original(parts)
    email = address_in(block.get("original-rcpt-to"))
    if email is None and original is not None:
        email = address_in(str(original.get("To") or ""))
    recipients = []
    if email:
        recipients.append(
            Recipient(
                email=email, reason="spam_detected" if feedback_type == "abuse" else "undefined"
            )
        )
    return Report(
        kind="complaint",
        recipients=recipients,
        original_message_id=message_id_in(original.get("Message-ID")) if original else None,
        feedback_type=feedback_type,
    )


def original_headers(msg: Message) -> Message | None:
    """The returned original's headers, wherever the report put them."""
    return _original(_parts(msg))
