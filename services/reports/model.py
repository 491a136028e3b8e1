"""What a delivery report says (API.md "Delivery reports"), as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("bounce", "delay", "complaint", "auto_reply", "delivered")

# The fixed list of reasons (docs/reports.md says what each means).
REASONS = (
    "user_unknown",
    "host_unknown",
    "mailbox_full",
    "filtered",
    "rejected",
    "blocked",
    "expired",
    "spam_detected",
    "policy_violation",
    "auth_failure",
    "security_error",
    "network_error",
    "system_error",
    "message_too_big",
    "suspended",
    "has_moved",
    "not_accepting",
    "too_many_connections",
    "syntax_error",
    "content_error",
    "virus_detected",
    "on_hold",
    "undefined",
)

# Caps that keep a report small whatever the mail claims.
MAX_RECIPIENTS = 100
MAX_DIAGNOSTIC = 1000
MAX_EMAIL = 320
MAX_ID = 998


@dataclass
class Recipient:
    email: str
    status: str | None = None
    action: str | None = None
    reason: str = "undefined"
    hard: bool = False
    diagnostic: str | None = None


@dataclass
class Report:
    kind: str
    recipients: list[Recipient] = field(default_factory=list)
    original_message_id: str | None = None
    feedback_type: str | None = None
    # Not shown in the API: what links the report to a send (services/reports/link.py).
    envelope_id: str | None = None
    verp: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The report as the API shows it."""
        return {
            "kind": self.kind,
            "recipients": [asdict(r) for r in self.recipients],
            "original_message_id": self.original_message_id,
            "feedback_type": self.feedback_type,
        }

    def stored(self) -> dict[str, Any]:
        """The report as the message row keeps it (the public fields plus link keys)."""
        out = self.public()
        if self.envelope_id:
            out["envelope_id"] = self.envelope_id
        if self.verp:
            out["verp"] = self.verp
        return _storable(out)  # type: ignore[no-any-return]


def _storable(value: Any) -> Any:
    """Strings PostgreSQL's JSONB accepts: no NUL, no lone surrogates (raw 8-bit headers)."""
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    return value


def public_of(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The API form of a stored report (link keys dropped)."""
    if not stored:
        return None
    return {
        k: stored.get(k) for k in ("kind", "recipients", "original_message_id", "feedback_type")
    }
