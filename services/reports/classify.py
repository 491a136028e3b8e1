"""A failure's reason (docs/reports.md's list) and whether the address is dead for good.

The enhanced status code (RFC 3463, RFC 7372, RFC 7505) names the reason when it is specific;
otherwise the server's words do, matched against phrases the common MTAs and providers write
(the same approach as Sisimai, reduced to what postroom needs). Every pattern is a plain
alternation of literals and bounded classes, run on a capped string: linear time.
"""

from __future__ import annotations

import re

# Specific codes: the reason whatever the text says (the text is often generic).
_SPECIFIC = {
    "1.1": "user_unknown",
    "1.2": "host_unknown",
    "1.3": "syntax_error",
    "1.6": "has_moved",
    "1.10": "not_accepting",
    "2.1": "suspended",
    "2.2": "mailbox_full",
    "2.3": "message_too_big",
    "3.4": "message_too_big",
    "7.13": "suspended",
    "7.27": "not_accepting",
}

# Codes that say little on their own: used when the text names nothing.
_GENERAL = {
    "1": "user_unknown",
    "2": "mailbox_full",
    "3": "system_error",
    "4": "network_error",
    "5": "syntax_error",
    "6": "content_error",
    "7": "security_error",
}
_GENERAL_DETAIL = {
    "1.0": "undefined",
    "1.4": "user_unknown",
    "1.5": "user_unknown",
    "1.7": "rejected",
    "1.8": "rejected",
    "2.0": "undefined",
    "2.4": "system_error",
    "3.0": "system_error",
    "3.1": "mailbox_full",
    "3.2": "not_accepting",
    "3.3": "system_error",
    "3.5": "system_error",
    "4.1": "network_error",
    "4.2": "network_error",
    "4.3": "system_error",
    "4.4": "host_unknown",
    "4.5": "too_many_connections",
    "4.6": "network_error",
    "4.7": "expired",
    "5.0": "system_error",
    "5.3": "too_many_connections",
    "7.0": "security_error",
    "7.1": "rejected",
    "7.8": "auth_failure",
    "7.9": "auth_failure",
    "7.14": "auth_failure",
}
for _n in range(15, 30):
    _GENERAL_DETAIL[f"7.{_n}"] = "auth_failure"

# Phrases, most specific first. The first group that matches names the reason.
_PHRASES: list[tuple[str, str]] = [
    (
        "virus_detected",
        r"virus|malware|infected|trojan|worm found|malicious (?:content|attachment)",
    ),
    (
        "suspended",
        r"suspended|(?:account|mailbox|user) (?:is |has been )?(?:disabled|deactivated|inactive"
        r"|closed|locked|blocked|terminated|expired|discontinued)|inactive (?:account|user|mailbox)"
        r"|disabled (?:account|user|mailbox)|not active|no longer active|deactivated",
    ),
    (
        "user_unknown",
        r"user unknown|unknown user|no such user|user not found|user doesn.t exist"
        r"|unknown recipient|recipient unknown|recipient not found|recipnotfound"
        r"|no such (?:mailbox|recipient|address|account|person)|mailbox not found"
        r"|mailbox (?:does not|doesn.t) exist|address (?:does not|doesn.t) exist"
        r"|account (?:does not|doesn.t) exist|does not exist|doesn.t exist|not exist"
        r"|invalid (?:recipient|mailbox|address|user)|not a valid (?:user|mailbox|recipient)"
        r"|unknown (?:local[- ]part|address|mailbox|account)|addressee unknown"
        r"|no mailbox (?:here|by that name)|bad destination mailbox|unrouteable address"
        r"|couldn.t be found|could not be found|was not found|is not a known user"
        r"|no longer (?:available|valid)|this user doesn.t have|not our customer"
        r"|recipient (?:address )?rejected: (?:user|undeliverable|access denied|unknown)"
        r"|undeliverable address|mailbox unavailable|mailbox is unavailable"
        r"|no valid recipients|unknown or illegal alias|user is unknown|mailbox unknown"
        r"|not listed in|cannot be reached at this address|name not recognized"
        r"|no such local user|invalid address|doesn.t have an? \S{1,50} account"
        r"|address not present",
    ),
    (
        "host_unknown",
        r"host unknown|unknown host|host not found|domain not found|no such domain"
        r"|domain (?:does not|doesn.t) exist|unrouteable mail domain|unable to route"
        r"|name or service not known|nxdomain|host or domain name not found|unknown domain"
        r"|no mx (?:record|host)|mx records point to non-existent|bad destination system"
        r"|domain (?:name )?(?:is )?not (?:found|registered)|dns (?:error|lookup failed)"
        r"|couldn.t find any host|host name lookup failure|no route for domain",
    ),
    (
        "mailbox_full",
        r"mailbox (?:is )?full|full mailbox|quota|over ?quota|storage (?:limit|full|exceeded)"
        r"|insufficient (?:storage|disk)|exceeded storage|mailbox size limit|mail ?box.{0,20}full"
        r"|out of (?:storage|disk space)|too much mail|inbox is full|mailfolder is full",
    ),
    (
        "message_too_big",
        r"message (?:is )?too (?:large|big)|size (?:limit )?exceed"
        r"|exceeds? (?:the )?(?:maximum|size)|message size|too large"
        r"|message length exceeds|mail too big",
    ),
    (
        "has_moved",
        r"has moved|moved to|user not local|address (?:has )?changed"
        r"|no longer (?:at|with|uses) this|new (?:e-?mail )?address is",
    ),
    (
        "not_accepting",
        r"does not accept mail|not accepting (?:mail|messages)|null mx|no mail service",
    ),
    (
        "spam_detected",
        r"spam(?!haus|cop)|junk mail|bulk mail|unsolicited|\buce\b|content (?:was )?rejected"
        r"|suspicious",
    ),
    (
        "blocked",
        r"blacklist|blocklist|black list|block list|blocked|\brbl\b|dnsbl|spamhaus|spamcop"
        r"|barracuda|listed (?:at|on|in)|poor reputation|reputation|client host rejected"
        r"|not allowed to send|refused by|sender (?:ip|host)|ip address|banned",
    ),
    (
        "auth_failure",
        r"\bspf\b|dkim|dmarc|authentication (?:failed|required|results)|unauthenticated"
        r"|not authenticated|auth(?:entication)? failure",
    ),
    ("security_error", r"tls required|requires? (?:tls|encryption)|starttls|certificate"),
    (
        "rejected",
        r"sender (?:address )?(?:rejected|refused|denied|verify failed|unknown)|sender verify"
        r"|domain of sender|from address|return path|mail from|sender domain",
    ),
    (
        "too_many_connections",
        r"too many (?:connections|concurrent|messages|recipients|sessions)|rate limit"
        r"|throttl|try again later|limit exceeded|too many",
    ),
    (
        "expired",
        r"retry time(?:out)? (?:not reached|exceeded)|delivery time expired|message expired"
        r"|could not be delivered within|in the queue too long|giving up|too long"
        r"|timeout exceeded|expired",
    ),
    (
        "network_error",
        r"connection (?:timed out|refused|reset|lost|closed)|timed out|network is unreachable"
        r"|no route to host|lost connection|unable to connect|couldn.t connect|could not connect"
        r"|conversation with|no answer|ehlo|helo",
    ),
    ("filtered", r"filtered|filter|rejected by (?:the )?recipient|recipient.{0,20}refus"),
    (
        "policy_violation",
        r"policy|not permitted|not allowed|prohibited|relay(?:ing)? (?:denied|not)|access denied"
        r"|administrative|rejected",
    ),
    ("syntax_error", r"syntax|bad address|malformed"),
    ("content_error", r"content|mime|header|encoding|8bit|line too long"),
    ("on_hold", r"on hold|held for|quarantin"),
    (
        "system_error",
        r"system error|local error|internal error|server error|temporar|resources|i/o error"
        r"|loop|misconfigur|local configuration",
    ),
]
_PHRASE_RES = [(reason, re.compile(pattern)) for reason, pattern in _PHRASES]

# Reasons after which the address can never take mail (API.md: unknown user or host, moved,
# closed). A block, a filter or a full mailbox is about this message or this moment.
_HARD_ALWAYS = {"user_unknown", "host_unknown", "has_moved"}
# Hard only when the failure is permanent: a closed mailbox or a domain that takes no mail.
_HARD_IF_PERMANENT = {"suspended", "not_accepting"}

TEXT_CAP = 2000


def phrase_reason(text: str | None) -> str | None:
    """The reason the server's words give, if any."""
    if not text:
        return None
    lowered = text[:TEXT_CAP].lower()
    for reason, pattern in _PHRASE_RES:
        if pattern.search(lowered):
            return reason
    return None


def code_reason(status: str | None) -> tuple[str | None, bool]:
    """(reason, specific) from an enhanced status code like 5.1.1."""
    if not status:
        return None, False
    _, _, detail = status.partition(".")
    if detail in _SPECIFIC:
        return _SPECIFIC[detail], True
    if detail in _GENERAL_DETAIL:
        return _GENERAL_DETAIL[detail], False
    return _GENERAL.get(detail.partition(".")[0]), False


def reason_of(status: str | None, diagnostic: str | None) -> str:
    """The reason: a specific code, then the words, then the code's class, else undefined."""
    by_code, specific = code_reason(status)
    if specific and by_code:
        # 5.1.1 from a server whose words say it blocked the sender is still a block (Office
        # 365 and others answer 5.1.1/5.7.1 loosely); words about an unknown user agree.
        words = phrase_reason(diagnostic)
        if words in ("blocked", "spam_detected", "virus_detected") and by_code == "user_unknown":
            return words
        if by_code == "not_accepting" and words == "user_unknown":
            # Exchange Online answers an unknown recipient with 5.1.10 (RecipientNotFound),
            # which RFC 7505 gives to a null MX.
            return words
        return by_code
    return phrase_reason(diagnostic) or by_code or "undefined"


def is_hard(reason: str, permanent: bool) -> bool:
    """Whether the address will never take mail (not merely: this message failed)."""
    if not permanent:
        return False
    return reason in _HARD_ALWAYS or reason in _HARD_IF_PERMANENT


_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]\d)")
_SMTP = re.compile(r"(?<![\d.-])([45])([0-9])([0-9])(?![\d.-]\d|\d)")


def find_status(text: str | None) -> str | None:
    """The first enhanced status code in the text (`5.1.1`), normalised."""
    if not text:
        return None
    m = _STATUS.search(text[:TEXT_CAP])
    if not m:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def find_smtp_code(text: str | None) -> str | None:
    """The first SMTP reply code (`550`) in the text."""
    if not text:
        return None
    m = _SMTP.search(text[:TEXT_CAP])
    return m.group() if m else None


# The status a reason implies when the server gave none (the classes RFC 3463 gives them).
_IMPLIED = {
    "user_unknown": "1.1",
    "host_unknown": "1.2",
    "mailbox_full": "2.2",
    "message_too_big": "3.4",
    "has_moved": "1.6",
    "suspended": "2.1",
    "not_accepting": "1.10",
    "syntax_error": "1.3",
    "expired": "4.7",
    "network_error": "4.1",
    "too_many_connections": "4.5",
    "content_error": "6.0",
    "spam_detected": "7.1",
    "blocked": "7.1",
    "virus_detected": "7.1",
    "auth_failure": "7.1",
    "security_error": "7.0",
    "policy_violation": "7.1",
    "rejected": "7.1",
    "filtered": "7.1",
    "system_error": "3.0",
}


def implied_status(reason: str, klass: str) -> str:
    """A status for a failure the server described only in words."""
    return f"{klass}.{_IMPLIED.get(reason, '0.0')}"
