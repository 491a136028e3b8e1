"""The delivery report parser costs linear time on hostile bounces (tests/hostile/cost.py):
each shape passes the quick header check, so the body scan and the field readers run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.messages.mime import parse
from tests.hostile.cost import assert_linear

_BOUNCE = b"From: MAILER-DAEMON@mx.example.net\r\nTo: a@example.org\r\nSubject: Undelivered\r\n"


def bounce_address_runs(n: int) -> bytes:
    """A plain bounce whose text is n runs of address characters that never reach an `@`."""
    return _BOUNCE + b"\r\n" + b"a.b-c" * n + b"\r\n"


def bounce_many_addresses(n: int) -> bytes:
    """A plain bounce naming n addresses, each at the start of a line with a status."""
    return _BOUNCE + b"\r\n" + b"u@example.org: 550 5.1.1 user unknown\r\n" * n


def bounce_recipient_words(n: int) -> bytes:
    """n times "recipient " on one line: the placed-address pattern's anchor, with no address."""
    return _BOUNCE + b"\r\n" + b"recipient " * n + b"\r\n"


def dsn_blocks(n: int) -> bytes:
    """A delivery-status part of n recipient blocks (only the first 100 are kept)."""
    blocks = b"Final-Recipient: rfc822; u@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    return (
        _BOUNCE
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        + b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        + blocks * n
        + b"--B--\r\n"
    )


def dsn_folded_diagnostic(n: int) -> bytes:
    """One recipient whose Diagnostic-Code continues over n folded lines."""
    return (
        _BOUNCE
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        + b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        + b"Final-Recipient: rfc822; u@example.org\r\nAction: failed\r\nDiagnostic-Code: smtp;"
        + b" x\r\n" * n
        + b"\r\n--B--\r\n"
    )


def subject_long(n: int) -> bytes:
    """A bounce-like subject of n words that almost match the subject markers."""
    return (
        b"From: mailer-daemon@x.example\r\nSubject: "
        + b"deliver undeliv autor " * n
        + b"\r\n\r\nx\r\n"
    )


@pytest.mark.parametrize(
    ("make", "n"),
    [
        (bounce_address_runs, 20_000),
        (bounce_many_addresses, 2_000),
        (bounce_recipient_words, 20_000),
        (dsn_blocks, 2_000),
        (dsn_folded_diagnostic, 5_000),
        (subject_long, 5_000),
    ],
)
def test_report_parsing_is_linear(make: Callable[[int], bytes], n: int) -> None:
    assert_linear(parse, make, n)
