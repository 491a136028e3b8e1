"""What a failed send's error may still say: the draft's addresses, names, subject and bodies
are cut out (the error reaches the event, the dead letter, the logs and the result backend)."""

from __future__ import annotations

import traceback

import sqlalchemy.exc as sa_exc

from services.errors import PostroomError, ValidationFailed
from services.outbound.compose import people
from services.outbound.send import REDACTED, SendFailed, SendRequest, redact_error
from services.outbound.smtp import SmtpRejected

REQUEST = SendRequest(
    to=[{"email": "Bob.Smith@example.org", "name": "Bob Smith"}],
    cc=["carol@example.org"],
    bcc=[{"email": "hidden@example.net"}],
    subject="Merger plans for Q3",
    body_text="The numbers are confidential.",
    body_html="<p>The numbers are <b>confidential</b>.</p>",
)
PRIVATE = REQUEST.private_strings()
NEEDLES = ["bob.smith@example.org", "carol@example.org", "hidden@example.net", "bob smith"]


def _shown(exc: BaseException) -> str:
    """Everything an operator or a log could see of it: the full formatted traceback."""
    return "".join(traceback.format_exception(exc)).lower()


def test_private_strings_cover_every_part_and_skip_tiny_ones() -> None:
    assert set(PRIVATE) >= {
        "Bob.Smith@example.org",
        "Bob Smith",
        "carol@example.org",
        "hidden@example.net",
        "Merger plans for Q3",
        "The numbers are confidential.",
    }
    short = SendRequest(to=["a@b.co"], subject="Hi", body_text="")
    assert short.private_strings() == ["a@b.co"], "a two-letter subject is not searched for"


def test_smtp_refusal_keeps_its_code_and_type_but_not_the_address() -> None:
    # Servers often echo the address in another case than it was given.
    reply = "550 5.1.1 <BOB.SMITH@EXAMPLE.ORG>: Recipient address rejected"
    exc = SmtpRejected(
        f"The SMTP server refused every recipient: {reply}.", smtp_code=550, reply=reply
    )
    out = redact_error(exc, PRIVATE, transient=False)
    assert out is exc and out.smtp_code == 550
    said = f"550 5.1.1 <{REDACTED}>: Recipient address rejected"
    assert out.message == f"The SMTP server refused every recipient: {said}."
    assert out.reply == said
    assert str(out) == out.message
    assert not any(n in _shown(out) for n in NEEDLES)


def test_validation_error_quoting_the_bad_address_is_redacted() -> None:
    bad = SendRequest(to=["not an address <x@y>"], subject="Merger plans for Q3")
    try:
        people(bad.to, "recipient")
    except ValidationFailed as exc:
        out = redact_error(exc, bad.private_strings(), transient=False)
    assert isinstance(out, ValidationFailed)
    assert "x@y" not in out.message and REDACTED in out.message


def test_chained_cause_quoting_the_mail_is_dropped() -> None:
    try:
        try:
            raise ValueError("cannot encode 'The numbers are confidential.'")
        except ValueError as inner:
            raise PostroomError("The message could not be built.") from inner
    except PostroomError as exc:
        out = redact_error(exc, PRIVATE, transient=False)
    assert out.__cause__ is None and out.__suppress_context__
    assert "confidential" not in _shown(out)
    assert "the message could not be built." in _shown(out)


def test_harmless_chain_is_kept_for_operators() -> None:
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise PostroomError("The connection broke.") from inner
    except PostroomError as exc:
        out = redact_error(exc, PRIVATE, transient=True)
    assert isinstance(out.__cause__, ConnectionResetError)


def test_foreign_error_listing_the_mail_becomes_send_failed_with_the_same_transience() -> None:
    # A database error prints its statement's parameters: subject and body among them.
    db_error = sa_exc.OperationalError(
        "INSERT INTO message (subject, text) VALUES ($1, $2)",
        ("Merger plans for Q3", "The numbers are confidential."),
        ConnectionError("server closed the connection"),
    )
    assert "Merger plans" in str(db_error)
    out = redact_error(db_error, PRIVATE, transient=True)
    assert isinstance(out, SendFailed) and out.transient
    assert "OperationalError" in out.message
    assert "merger plans" not in _shown(out) and "confidential" not in _shown(out)
    permanent = redact_error(
        sa_exc.IntegrityError("INSERT", ("Merger plans for Q3",), Exception("dup")),
        PRIVATE,
        transient=False,
    )
    assert isinstance(permanent, SendFailed) and not permanent.transient


def test_error_without_the_mail_is_left_alone() -> None:
    exc = SmtpRejected("The SMTP server answered 554 5.7.1 policy to DATA.", smtp_code=554)
    assert redact_error(exc, PRIVATE, transient=False).message == exc.message
