"""SMTP failures as the retry policy, the send ledger and tenants need them.

What a tenant reads never quotes a foreign server: a reply is shown as its code and RFC 3463
enhanced status code (`554 5.7.1`); its text stays in the send ledger for operators.
"""

from __future__ import annotations

import re

import aiosmtplib

from services import destination
from services.errors import BadCredentials, PostroomError, ProviderPermanentError, TransientError
from services.outbound.smtp_wire import Reply, WireError

# RFC 3463 enhanced status code at the start of a reply's text ("5.7.1 ...").
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


class SmtpTemporaryError(TransientError):
    """The SMTP server failed temporarily (4xx, connection trouble): retry later."""

    code = "smtp_temporary_error"


class SmtpRejected(ProviderPermanentError):
    """The SMTP server refused the message for good (5xx)."""

    code = "smtp_rejected"

    def __init__(self, message: str, *, smtp_code: int | None = None, reply: str = "") -> None:
        super().__init__(message)
        self.smtp_code = smtp_code
        self.reply = reply


class SmtpAuthUnavailable(ProviderPermanentError):
    """The account has SMTP credentials but the server offers no AUTH to use them with."""

    code = "smtp_auth_unavailable"


class DeliveryUnknown(PostroomError):
    """The message content reached the server but its final answer did not reach us."""

    status_code = 502
    code = "delivery_unknown"


def shown_code(code: int, message: str) -> str:
    """What a tenant is shown of a reply: its code and enhanced status code, not its text.

    The text is the peer's own words (a banner, an echo of what it was sent); the full reply
    stays in the send ledger for operators.
    """
    enhanced = _ENHANCED.match(message or "")
    return f"{code} {enhanced.group(1)}" if enhanced else str(code)


def from_response(exc: aiosmtplib.SMTPResponseException, stage: str) -> PostroomError:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) and 500 <= exc.code < 600:
        return BadCredentials(f"The SMTP server refused the login ({exc.code}).")
    return refusal(Reply(exc.code, exc.message.encode()), stage)


def refusal(reply: Reply, stage: str) -> PostroomError:
    """The error for a reply that is not the one wanted: its codes are shown, its text goes
    to the ledger only. 4xx is worth a retry; anything else from an SMTP server is not."""
    if not 200 <= reply.code < 600:
        return SmtpTemporaryError(f"The SMTP server sent a reply that is not SMTP to {stage}.")
    text = f"The SMTP server answered {shown_code(reply.code, reply.text)} to {stage}."
    if 400 <= reply.code < 500:
        return SmtpTemporaryError(text)
    return SmtpRejected(text, smtp_code=reply.code, reply=str(reply))


def all_refused(replies: list[Reply]) -> PostroomError:
    first = replies[0]
    shown = shown_code(first.code, first.text)
    if all(400 <= r.code < 500 for r in replies):
        return SmtpTemporaryError(f"The SMTP server deferred every recipient ({shown}).")
    return SmtpRejected(
        f"The SMTP server refused every recipient ({shown}).",
        smtp_code=first.code,
        reply=str(first),
    )


def broken(exc: BaseException, what: str) -> SmtpTemporaryError:
    """A failure of the connection itself, in words (never the peer's or the exception's)."""
    return SmtpTemporaryError(f"{what}: {why(exc)}.")


def why(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    if isinstance(exc, WireError):
        return str(exc)  # our own words, see smtp_wire
    return destination.failure_kind(exc)
