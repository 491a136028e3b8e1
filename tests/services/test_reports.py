"""The delivery report parser (services/reports) on one sample of each shape that comes back:
RFC 3464 reports, ARF complaints, RFC 3834 auto-replies and the plain-text bounces of Exim,
qmail, Sendmail, Gmail and Yahoo. The samples are written after real ones, addresses changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.messages.mime import parse
from services.reports import classify
from services.reports.model import REASONS

SAMPLES = Path(__file__).parent / "report_samples"


def report_of(name: str) -> dict[str, Any] | None:
    return parse((SAMPLES / name).read_bytes()).report


def only_recipient(report: dict[str, Any] | None) -> dict[str, Any]:
    assert report is not None
    assert len(report["recipients"]) == 1, report["recipients"]
    return report["recipients"][0]  # type: ignore[no-any-return]


def test_postfix_dsn_is_a_hard_bounce_with_its_original_and_envelope_id() -> None:
    report = report_of("postfix_dsn.eml")
    assert report is not None and report["kind"] == "bounce"
    r = only_recipient(report)
    assert r["email"] == "nobody@example.org"
    assert (r["status"], r["action"], r["reason"], r["hard"]) == (
        "5.1.1",
        "failed",
        "user_unknown",
        True,
    )
    assert r["diagnostic"].startswith("550 5.1.1")
    assert report["original_message_id"] == "<orig-1@sender.example>"
    assert report["envelope_id"] == "env-123"
    assert report["verp"] == ["bounces+abc@sender.example"]


def test_delay_dsn_is_a_delay_and_never_hard() -> None:
    report = report_of("delay_dsn.eml")
    assert report is not None and report["kind"] == "delay"
    r = only_recipient(report)
    assert (r["status"], r["action"], r["hard"]) == ("4.4.1", "delayed", False)
    assert r["reason"] == "network_error"
    assert report["original_message_id"] == "<orig-7@sender.example>"


def test_a_reputation_block_is_permanent_for_the_message_but_not_hard() -> None:
    report = report_of("o365_dsn.eml")
    r = only_recipient(report)
    assert (r["status"], r["action"], r["reason"], r["hard"]) == (
        "5.7.1",
        "failed",
        "blocked",
        False,
    )


def test_arf_complaint_names_the_recipient_feedback_type_and_original() -> None:
    report = report_of("arf.eml")
    assert report is not None and report["kind"] == "complaint"
    assert report["feedback_type"] == "abuse"
    assert only_recipient(report)["email"] == "angry@example.com"
    assert report["original_message_id"] == "<orig-5@sender.example>"


def test_vacation_reply_is_an_auto_reply_from_its_sender() -> None:
    report = report_of("vacation.eml")
    assert report is not None and report["kind"] == "auto_reply"
    assert only_recipient(report)["email"] == "bob@example.com"
    assert report["original_message_id"] == "<orig-6@sender.example>"


@pytest.mark.parametrize(
    ("sample", "email", "status", "reason", "hard", "original"),
    [
        (
            "exim_plain.eml",
            "gone@example.com",
            "5.2.1",
            "suspended",
            True,
            "<orig-2@sender.example>",
        ),
        (
            "qmail.eml",
            "full@example.net",
            "5.2.2",
            "mailbox_full",
            False,
            "<orig-3@sender.example>",
        ),
        (
            "gmail.eml",
            "missing@gmail.com",
            "5.1.1",
            "user_unknown",
            True,
            "<orig-4@sender.example>",
        ),
        (
            "yahoo_plain.eml",
            "nouser@yahoo.example",
            "5.1.1",
            "user_unknown",
            True,
            "<orig-9@sender.example>",
        ),
        ("sendmail_plain.eml", "moved@old.example.edu", "5.1.6", "has_moved", True, None),
    ],
)
def test_plain_text_bounces(
    sample: str, email: str, status: str, reason: str, hard: bool, original: str | None
) -> None:
    report = report_of(sample)
    assert report is not None and report["kind"] == "bounce"
    r = only_recipient(report)
    assert (r["email"], r["status"], r["action"], r["reason"], r["hard"]) == (
        email,
        status,
        "failed",
        reason,
        hard,
    )
    assert report["original_message_id"] == original


def test_a_person_writing_about_bounces_is_no_report() -> None:
    assert report_of("ham.eml") is None


@pytest.mark.parametrize(
    ("subject", "headers", "expected"),
    [
        ("Abwesenheitsnotiz: Termin", "", "auto_reply"),
        ("Réponse automatique : Devis", "", "auto_reply"),
        ("Respuesta automática: hola", "", "auto_reply"),
        ("自動返信: 会議", "", "auto_reply"),
        ("Hello", "Auto-Submitted: auto-generated\n", "auto_reply"),
        ("Hello", "X-Autoreply: yes\n", "auto_reply"),
        ("Hello", "Precedence: auto_reply\n", "auto_reply"),
        ("Hello", "Auto-Submitted: no\n", None),
        ("Re: vacation plans", "", None),
        ("Vacationing in Spain", "", None),
    ],
)
def test_auto_reply_markers(subject: str, headers: str, expected: str | None) -> None:
    raw = (
        f"From: Bob <bob@example.com>\nTo: a@example.org\nSubject: {subject}\n{headers}\nBody\n"
    ).encode()
    report = parse(raw).report
    assert (report["kind"] if report else None) == expected


def test_ordinary_mail_is_no_report() -> None:
    raw = b"From: a@example.org\nTo: b@example.net\nSubject: lunch\n\nsee you at noon\n"
    assert parse(raw).report is None


def test_every_reason_the_classifier_gives_is_in_the_fixed_list() -> None:
    reasons = {reason for reason, _ in classify._PHRASES}
    reasons |= set(classify._SPECIFIC.values()) | set(classify._GENERAL.values())
    reasons |= set(classify._GENERAL_DETAIL.values())
    assert reasons <= set(REASONS)


@pytest.mark.parametrize(
    ("status", "words", "reason", "hard"),
    [
        ("5.1.1", "user unknown", "user_unknown", True),
        ("4.1.1", "user unknown", "user_unknown", False),
        ("5.1.2", "host not found", "host_unknown", True),
        ("5.7.1", "rejected: listed at zen.spamhaus.org", "blocked", False),
        ("5.7.1", "message rejected as spam", "spam_detected", False),
        ("5.0.0", "mailbox unavailable: account disabled", "suspended", True),
        ("5.2.2", "quota exceeded", "mailbox_full", False),
        ("5.3.4", "message size exceeds fixed limit", "message_too_big", False),
        ("5.7.26", "unauthenticated email is not accepted (DMARC)", "auth_failure", False),
        ("4.7.0", "try again later", "too_many_connections", False),
        (None, "infected with a virus", "virus_detected", False),
        ("5.0.0", "", "undefined", False),
        (
            "5.1.10",
            "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "user_unknown",
            True,
        ),
        ("5.1.10", "Recipient address has null MX", "not_accepting", True),
        (
            "5.4.1",
            "Recipient address rejected: Access denied. AS(201806281) [BN8NAM11FT.eop]",
            "user_unknown",
            True,
        ),
        ("5.3.0", "Amazon SES: Unknown user, mailbox not found", "user_unknown", True),
        ("4.2.2", "The email account that you tried to reach is over quota", "mailbox_full", False),
        (None, None, "undefined", False),
    ],
)
def test_reason_and_hardness(
    status: str | None, words: str | None, reason: str, hard: bool
) -> None:
    got = classify.reason_of(status, words)
    assert got == reason
    assert classify.is_hard(got, permanent=bool(status and status.startswith("5"))) is hard


def test_a_report_with_thousands_of_recipients_keeps_the_first_hundred() -> None:
    blocks = "".join(
        f"Final-Recipient: rfc822; u{i}@example.org\nAction: failed\nStatus: 5.1.1\n\n"
        for i in range(1000)
    )
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nTo: a@example.org\nSubject: Undelivered\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        f"--B\nContent-Type: text/plain\n\nx\n--B\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx\n\n{blocks}--B--\n"
    ).encode()
    report = parse(raw).report
    assert report is not None and len(report["recipients"]) == 100


def test_nul_bytes_and_raw_8bit_in_a_bounce_are_stored_cleanly() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: a@example.org\nSubject: Undelivered\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
        b"Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"Diagnostic-Code: smtp; 550 user \x00unknown \xe9\xff\n\n--B--\n"
    )
    report = parse(raw).report
    r = only_recipient(report)
    assert r["diagnostic"].startswith("550 user") and "\x00" not in r["diagnostic"]
    r["diagnostic"].encode("utf-8")  # no lone surrogates: JSONB takes it


def test_a_nylas_message_is_read_from_its_fields() -> None:
    from services.reports.detect import detect_fields

    report = detect_fields(
        headers=[{"name": "X-Failed-Recipients", "value": "gone@example.org"}],
        from_email="mailer-daemon@googlemail.com",
        from_name="Mail Delivery Subsystem",
        subject="Delivery Status Notification (Failure)",
        text="Your message wasn't delivered to gone@example.org because the address couldn't "
        "be found.\n550 5.1.1 The email account that you tried to reach does not exist.",
    )
    assert report is not None and report["kind"] == "bounce"
    assert only_recipient(report)["email"] == "gone@example.org"
    assert only_recipient(report)["hard"] is True
    ordinary = detect_fields(
        headers=None, from_email="a@example.org", from_name="A", subject="hi", text="hello"
    )
    assert ordinary is None
