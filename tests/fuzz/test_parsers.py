"""Property tests over every parser of outside input: whatever the bytes, each one terminates
and answers with a value or its own documented error, never anything else. `make fuzz` runs
these for FUZZ_SECONDS; findings become regression tests in tests/hostile."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import resource
import time
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from api.limits import MAX_DEPTH, json_depth_exceeds
from services.classify import features, mail
from services.errors import BadRequest, InvalidSignature, PayloadTooLarge
from services.events.webhooks import decompress, parse_notification, sign, verify_signature
from services.imap import protocol as imap_protocol
from services.messages.html_text import html_to_text
from services.messages.mime import ParsedMessage, message_id_value, parse
from tests.fuzz.conftest import fuzz_share, keep_fuzzing

SECRET = "whsec_fuzz"
# Characters that matter to the parsers, so random text hits their edges often.
MARKUP = st.text(alphabet=st.sampled_from(list("<>/!-a b=\"'&#;\r\n\t:()[]{}\\@.\x00é")))
MAIL_BYTES = st.binary(max_size=4000) | MARKUP.map(lambda t: t.encode("utf-8", "replace"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=60,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


# Webhooks -----------------------------------------------------------------------------------
def test_webhook_signature_and_envelope() -> None:
    @given(body=st.binary(max_size=2000), signature=st.text(max_size=80) | st.none())
    def check(body: bytes, signature: str | None) -> None:
        verify_signature(SECRET, body, sign(SECRET, body))
        with contextlib.suppress(InvalidSignature):
            verify_signature(SECRET, body, signature)
        try:
            note = parse_notification(body)
        except BadRequest:
            return
        assert note.id.strip() and note.type.strip()

    keep_fuzzing(check)


def test_webhook_json_envelopes() -> None:
    envelope = st.fixed_dictionaries(
        {"id": st.text(max_size=600), "type": st.text(max_size=300)}, optional={"data": json_values}
    )

    @given(
        value=json_values | envelope,
        encoding=st.sampled_from([None, "", "gzip", "br", "identity"]),
    )
    def check(value: Any, encoding: str | None) -> None:
        body = orjson.dumps(value)
        try:
            raw = decompress(body, encoding, limit=1 << 20)
            note = parse_notification(raw)
        except (BadRequest, PayloadTooLarge):
            return
        assert isinstance(value, dict) and note.id == value["id"] and note.type == value["type"]

    keep_fuzzing(check)


# MIME ---------------------------------------------------------------------------------------
def test_mime_parse_never_raises() -> None:
    @given(raw=MAIL_BYTES)
    def check(raw: bytes) -> None:
        parsed = parse(raw)
        assert isinstance(parsed, ParsedMessage) and parsed.size == len(raw)
        for value in (parsed.subject, parsed.text, parsed.message_id_header):
            assert value is None or "\x00" not in value

    keep_fuzzing(check)


def test_mime_headers_of_random_shape() -> None:
    header_text = st.text(alphabet=st.sampled_from(list(' \t\r\n<>()@.=?"\\aQ')), max_size=300)

    @given(
        name=st.sampled_from(["Subject", "From", "To", "Message-ID", "References"]),
        value=header_text,
        body=MARKUP,
    )
    def check(name: str, value: str, body: str) -> None:
        raw = f"{name}: {value}\r\nContent-Type: text/html\r\n\r\n{body}".encode()
        parsed = parse(raw)
        if name == "Message-ID" and parsed.message_id_header is not None:
            assert parsed.message_id_header == parsed.message_id_header.strip()

    keep_fuzzing(check)


def test_message_id_value_is_trimmed_and_never_none_for_a_value() -> None:
    @given(value=st.text(max_size=300))
    def check(value: str) -> None:
        out = message_id_value(value)
        assert out is not None and out == out.strip() and "\x00" not in out

    keep_fuzzing(check)


# Classifier ---------------------------------------------------------------------------------
def test_classifier_features_never_raise() -> None:
    @given(html=MARKUP, text=MARKUP, subject=st.text(max_size=100), sender=st.text(max_size=60))
    def check(html: str, text: str, subject: str, sender: str) -> None:
        doc = mail.MailDoc(
            subject=subject,
            from_name=sender,
            from_email=sender,
            html=html,
            text=text,
            headers=[("Authentication-Results", subject)],
        )
        found = features.extract(doc)
        assert found.tokens == sorted(set(found.tokens))
        assert isinstance(html_to_text(html), str)

    keep_fuzzing(check)


# JSON limits --------------------------------------------------------------------------------
def test_json_depth_matches_the_parsed_depth() -> None:
    @given(value=json_values, extra=st.integers(min_value=0, max_value=40))
    def check(value: Any, extra: int) -> None:
        doc = nested(value, extra)
        for body in (orjson.dumps(doc), json.dumps(doc, indent=1).encode()):
            assert json_depth_exceeds(body) == (depth(doc) > MAX_DEPTH)

    keep_fuzzing(check)


def test_json_depth_on_any_bytes_terminates_with_a_bool() -> None:
    @given(body=st.binary(max_size=3000) | MARKUP.map(str.encode))
    def check(body: bytes) -> None:
        assert json_depth_exceeds(body) in (True, False)

    keep_fuzzing(check)


# IMAP responses -----------------------------------------------------------------------------
# The parser's one documented failure: anything else (IndexError, RecursionError) is a bug.
IMAP_ERRORS: tuple[type[BaseException], ...] = (imap_protocol.ImapProtocolError,)
IMAP_INPUTS = st.binary(max_size=2000) | st.text(
    alphabet=st.sampled_from(list('()"\\{}[] 0123+\r\nNILabc'))
).map(str.encode)
# Each example must finish in this long, in a child limited to this much memory: a parser that
# loops forever is a finding, not a hung test run.
IMAP_EXAMPLE_SECONDS = 5.0
IMAP_CHILD_BYTES = 1 << 30


def _imap_child(last_input: str, seconds: float) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (IMAP_CHILD_BYTES, IMAP_CHILD_BYTES))

    @given(data=IMAP_INPUTS)
    def check(data: bytes) -> None:
        Path(last_input).write_bytes(data)  # what the parent reports if this one never returns
        with contextlib.suppress(*IMAP_ERRORS):
            imap_protocol.parse_items(data)
        imap_protocol.response_codes(data)
        imap_protocol.literal_size(data)

    stop = time.monotonic() + seconds
    check()
    while time.monotonic() < stop:
        check()


def test_imap_response_parser_terminates_and_raises_only_its_own_errors(tmp_path: Path) -> None:
    last_input = tmp_path / "last-input"
    child = multiprocessing.get_context("fork").Process(
        target=_imap_child, args=(str(last_input), fuzz_share())
    )
    child.start()
    child.join(fuzz_share() + 3 * IMAP_EXAMPLE_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
        raise AssertionError(f"parse_items did not terminate on {last_input.read_bytes()[:200]!r}")
    assert child.exitcode == 0, f"the parser failed on {last_input.read_bytes()[:200]!r}"
