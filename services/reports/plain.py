"""Bounces written as plain text: Exchange and Office 365, Exim, qmail, Postfix and Sendmail
without a delivery-status part, Gmail, Yahoo, Amazon SES and the long tail that copies them.

A message is read this way only after `looks_like_bounce` (sender, subject or X-Failed-
Recipients): the body scan never runs on ordinary mail. The scan reads the first TEXT_CAP
characters of the text, up to where the returned original starts, and takes from it the
failed addresses and, near each, the SMTP code, enhanced status code and the server's words.
"""

from __future__ import annotations

import re
from email.message import Message

from services.reports import classify
from services.reports.fields import ADDR_PATTERN, addresses_in, message_id_in, one_line
from services.reports.model import MAX_RECIPIENTS, Recipient, Report

TEXT_CAP = 64 * 1024
# Characters after an address that describe its failure (Exim's "host ... said: 550 ...").
WINDOW = 700

_SENDER = re.compile(
    r"mailer-daemon|postmaster|mail delivery (?:subsystem|system|service)|mdaemon"
    r"|microsoftexchange|\bmailerdaemon|mail ?administrator",
    re.IGNORECASE,
)
_SUBJECT_BOUNCE = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|failure|failed|has failed|notification)"
    r"|returned mail|mail delivery (?:failed|failure|system|problem)|failure notice"
    r"|could not be delivered|delivery problem|nondeliverable|non-delivery|message not delivered"
    r"|not delivered|delivery error|rejected|returned to sender|bounce|unzustellbar"
    r"|nicht zustellbar|non remis|non recapitabile|no se puede entregar|onbestelbaar"
    r"|nao entregue|não entregue|olevererbar|delayed mail|delivery delayed|warning: message"
    r"|delivery status|mail system error|failed mail|undeliverable",
    re.IGNORECASE,
)
_SUBJECT_DELAY = re.compile(
    r"delay|still being retried|will retry|warning: could not send|not yet been delivered"
    r"|verzögert",
    re.IGNORECASE,
)
# What the opening of a bounce says (checked on the first BODY_MARKER_CHARS characters).
BODY_MARKER_CHARS = 3000
_BODY_BOUNCE = re.compile(
    r"could ?n[o']t (?:be )?deliver|unable to deliver|undeliverable|did not reach"
    r"|delivery (?:has )?failed|delivery to the following|failed recipient"
    r"|permanent (?:fatal )?error"
    r"|not be delivered|was ?n[o']t delivered|message not delivered|non-delivery"
    r"|user unknown|unknown user|no such user|mailbox unavailable|n'a pas pu|nicht zugestellt"
    r"|no se pudo entregar|non recapitat",
    re.IGNORECASE,
)
_BODY_DELAY = re.compile(
    r"will (?:continue to )?(?:retry|try again|keep trying|try to deliver)"
    r"|still (?:trying|being retried)|continue to try|has been postponed|delivery attempts will"
    r"|not yet been delivered|delivery (?:is|has been) delayed|no action is required"
    r"|this is a warning|retry(?:ing)? for|will be retried",
    re.IGNORECASE,
)
# Where the returned original (or a copy of its headers) starts: nothing after it is about the
# failure, and its addresses (the original's From, To) are not failed recipients.
_ORIGINAL_STARTS = re.compile(
    r"^[ \t>-]*(?:-{2,}|_{2,}|={2,})?[ \t]*(?:"
    r"this is a copy of (?:the|your) message|below this line is a copy of the message"
    r"|original message (?:follows|headers|header|was)|original message[ \t]*-"
    r"|the (?:original|returned) message|(?:un)?sent message follows|returned message"
    r"|message (?:headers|text) follows|original headers|headers of (?:the )?(?:original|your)"
    r"|forwarded message|copy of (?:the )?message|transcript of session|reporting-mta:"
    r"|received: from|return-path:|original-recipient:|message-id:"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_MESSAGE_ID_LINE = re.compile(
    r"^[ \t>]*message-id:[ \t]*(<[^<>\s]{1,990}>)", re.IGNORECASE | re.MULTILINE
)
# Where a bounce names a failed address: alone at the start of a line (Exim, qmail, Sendmail,
# Exchange, Postfix) or after "delivered to" (Gmail, SES). An address elsewhere in the text
# ("please try <new@...>") counts only when none is found in these places.
_PLACED = re.compile(
    r"(?:^[ \t]{0,20}[<\"]?|(?:delivered|deliver|delivery|sent|send) to:?[ \t]{1,5}<?"
    r"|recipient:?[ \t]{0,5}<?|failed:[ \t]{0,5}<?)(" + ADDR_PATTERN + ")",
    re.IGNORECASE | re.MULTILINE,
)
_NOT_RECIPIENT = re.compile(r"mailer-daemon|postmaster|^bounce|^noreply|^no-reply", re.IGNORECASE)


def maybe_bounce(
    *, from_email: str | None, from_name: str | None, subject: str | None, msg: Message
) -> bool:
    """The quick check (headers only): only a message passing it has its body looked at."""
    if msg.get("X-Failed-Recipients"):
        return True
    sender = f"{from_name or ''} {from_email or ''}"[:400]
    return bool(_SENDER.search(sender) or (subject and _SUBJECT_BOUNCE.search(subject[:300])))


def looks_like_bounce(
    *,
    from_email: str | None,
    from_name: str | None,
    subject: str | None,
    msg: Message,
    text: str | None,
) -> bool:
    """A mail system's sender, X-Failed-Recipients, or a bounce subject on a message that is
    automatic or whose opening says it could not deliver. A subject alone ("Re: your
    undeliverable parcel") from a person is not enough."""
    if msg.get("X-Failed-Recipients"):
        return True
    sender = f"{from_name or ''} {from_email or ''}"[:400]
    if _SENDER.search(sender):
        return True
    if not (subject and _SUBJECT_BOUNCE.search(subject[:300])):
        return False
    automatic = str(msg.get("Auto-Submitted") or "no")[:40].strip().lower() != "no"
    return automatic or bool(text and _BODY_BOUNCE.search(text[:BODY_MARKER_CHARS]))


def _region(text: str) -> tuple[str, str]:
    """(the failure description, the rest) of a bounce's text."""
    text = text[:TEXT_CAP]
    # Skip the opening lines: headers quoted at the very top are rare, a "From:" line in the
    # first few hundred characters of a bounce is its own description.
    m = _ORIGINAL_STARTS.search(text, 40)
    if m is None:
        return text, ""
    return text[: m.start()], text[m.start() :]


def _status_near(window: str) -> tuple[str | None, str | None]:
    return classify.find_status(window), classify.find_smtp_code(window)


def read(msg: Message, *, text: str | None, subject: str | None, own: set[str]) -> Report | None:
    """A plain-text bounce or delay; None when no failed address can be found."""
    body = text or ""
    region, rest = _region(body)
    failed_header = str(msg.get("X-Failed-Recipients") or "")[:4000]
    candidates = addresses_in(failed_header, MAX_RECIPIENTS)
    placed = [m.group(1) for m in _PLACED.finditer(region)][: MAX_RECIPIENTS * 4]
    in_region = addresses_in("\n".join(placed), MAX_RECIPIENTS * 4) or addresses_in(
        region, MAX_RECIPIENTS * 4
    )
    # An address named by X-Failed-Recipients wins; otherwise every address the description
    # names that is not the mail system or the bounced sender.
    if not candidates:
        candidates = in_region
    lowered_own = {o.lower() for o in own}
    emails: list[str] = []
    for email in candidates:
        local = email.partition("@")[0]
        if email.lower() in lowered_own or _NOT_RECIPIENT.search(local) or email in emails:
            continue
        emails.append(email)
        if len(emails) >= MAX_RECIPIENTS:
            break
    if not emails:
        return None
    delay = bool(
        (subject and _SUBJECT_DELAY.search(subject[:300])) or _BODY_DELAY.search(region[:8000])
    )
    lowered = region.lower()
    recipients = []
    for email in emails:
        at = lowered.find(email.lower())
        window = region[at : at + WINDOW] if at >= 0 else region[:WINDOW]
        status, smtp = _status_near(window)
        if status is None and smtp is None:
            status, smtp = _status_near(region)
        words = window if at >= 0 else region[: classify.TEXT_CAP]
        if status is None and smtp is not None:
            klass = smtp[0]
        elif status is not None:
            klass = status[0]
        else:
            klass = "4" if delay else "5"
        reason = classify.reason_of(status, words)
        if status is None:
            status = classify.implied_status(reason, klass)
        action = "delayed" if delay or klass == "4" else "failed"
        recipients.append(
            Recipient(
                email=email,
                status=status,
                action=action,
                reason=reason,
                hard=classify.is_hard(reason, action == "failed"),
                diagnostic=one_line(_diagnostic(window, email)),
            )
        )
    m = _MESSAGE_ID_LINE.search(rest) or _MESSAGE_ID_LINE.search(body[:TEXT_CAP])
    kind = "bounce" if any(r.action == "failed" for r in recipients) else "delay"
    return Report(
        kind=kind,
        recipients=recipients,
        original_message_id=message_id_in(m.group(1)) if m else None,
    )


def _diagnostic(window: str, email: str) -> str:
    """The server's words about one address: the window without the address itself."""
    cut = window[len(email) :] if window.lower().startswith(email.lower()) else window
    return cut.strip(" \t\r\n>:<()")[:1000]
