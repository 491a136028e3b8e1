"""MIME parsing of raw messages: decoded headers and bodies, attachments, threading ids."""

from __future__ import annotations

import base64
import hashlib

from scripts.corpus import messages, raw_message
from services.messages.mime import MAX_MESSAGE_ID_CHARS, message_id_of_header_block, parse

PDF = b"%PDF-1.4 fake pdf bytes \x00\x01\x02" * 10
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40

MULTIPART = (
    b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jurgen@example.de>\r\n"
    b"To: Ann <ann@example.org>, bob@example.org\r\n"
    b"Cc: =?iso-8859-1?q?Ren=E9?= <rene@example.fr>\r\n"
    b"Subject: =?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?= und mehr\r\n"
    b"Message-ID: <abc.123@example.de>\r\n"
    b"In-Reply-To: <parent@example.org>\r\n"
    b"References: <root@example.org>\r\n <parent@example.org>\r\n"
    b"Date: Tue, 03 Sep 2024 10:11:12 +0200\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=OUTER\r\n\r\n"
    b"--OUTER\r\nContent-Type: multipart/alternative; boundary=ALT\r\n\r\n"
    b"--ALT\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 cr=E8me\r\n"
    b"--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>Caf\xc3\xa9 <b>cr\xc3\xa8me</b></p>\r\n"
    b"--ALT--\r\n"
    b"--OUTER\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
    b"Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PNG)
    + b"--OUTER\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF) + b"--OUTER--\r\n"
)


def test_headers_are_decoded_from_rfc2047_and_threading_ids_kept() -> None:
    m = parse(MULTIPART)
    assert m.subject == "Grüße aus Köln und mehr"
    assert (m.from_name, m.from_email) == ("Jürgen Müller", "jurgen@example.de")
    assert m.to_addrs == [
        {"name": "Ann", "email": "ann@example.org"},
        {"name": None, "email": "bob@example.org"},
    ]
    assert m.cc_addrs == [{"name": "René", "email": "rene@example.fr"}]
    assert m.message_id_header == "<abc.123@example.de>"
    assert m.in_reply_to == "<parent@example.org>"
    assert m.references == ["<root@example.org>", "<parent@example.org>"]
    assert m.date is not None and m.date.isoformat() == "2024-09-03T10:11:12+02:00"
    assert ["Subject", "Grüße aus Köln und mehr"] in m.headers


def test_bodies_by_charset_and_attachments_with_size_and_sha256() -> None:
    m = parse(MULTIPART)
    assert m.text is not None and m.text.strip() == "Café crème"
    assert m.html is not None and "<b>crème</b>" in m.html
    assert m.snippet == "Café crème"
    inline, pdf = m.attachments
    assert (inline.is_inline, inline.content_id, inline.size) == (True, "logo@x", len(PNG))
    assert inline.sha256 == hashlib.sha256(PNG).hexdigest()
    assert (pdf.filename, pdf.content_type, pdf.is_inline) == (
        "Rechnung März.pdf",
        "application/pdf",
        False,
    )
    assert pdf.size == len(PDF) and pdf.sha256 == hashlib.sha256(PDF).hexdigest()
    assert m.has_attachments and m.parse_warnings == []


def test_wrong_declared_charset_falls_back_with_a_warning() -> None:
    raw = (
        b"Subject: x\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nna\xefve r\xe9sum\xe9\r\n"
    )
    m = parse(raw)
    assert m.text is not None and "naïve résumé" in m.text
    assert any("decoded as cp1252" in w for w in m.parse_warnings)


def test_garbage_never_raises_and_keeps_what_it_can() -> None:
    for raw in (
        b"",
        b"\x00\xff\xfe",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary",
        b"Subject: =?utf-8?B?!!!?=\r\n\r\nbody",
        b"\r\n\r\n\r\n",
    ):
        m = parse(raw)
        assert m.size == len(raw)
        for value in (m.text, m.subject, m.html):
            assert value is None or "\x00" not in value


def test_whole_training_corpus_parses_without_exceptions() -> None:
    count = 0
    for folder in ("hard-ham-1", "spam-1"):
        for path in messages(folder):
            m = parse(raw_message(path))
            assert m.text or m.html or m.attachments or m.parse_warnings
            count += 1
    assert count == 750


MESSAGE_IDS = [
    # (the header as sent, what message_id_header holds)
    (b"Message-ID: <plain@example.org>", "<plain@example.org>"),
    (b"Message-ID:   <spaced@example.org>   ", "<spaced@example.org>"),
    (b"Message-ID: <a@b> (added by relay.example.net)", "<a@b>"),
    (b"Message-ID: <a@b> (outer (nested) \\) quoted) (second)", "<a@b>"),
    (b"Message-ID:\r\n <folded@example.org>", "<folded@example.org>"),
    (b"Message-ID: <a@b>\r\n (comment on the next line)", "<a@b>"),
    # Malformed: the whole value, never an id picked out of its middle.
    (b"Message-ID: no-brackets@example.org", "no-brackets@example.org"),
    (b"Message-ID: junk <inner@example.org> more", "junk <inner@example.org> more"),
    (b"Message-ID: <a@b> trailing words", "<a@b> trailing words"),
    (b"Message-ID: <two@a> <ids@b>", "<two@a> <ids@b>"),
    (b"Message-ID: <a@b> (unclosed comment", "<a@b> (unclosed comment"),
    (b"Message-ID: <with space@b>", "<with space@b>"),
    (b"Message-ID: folded\r\n\tmalformed value", "folded\tmalformed value"),
    (b"Message-ID:", ""),
]


def _with_header(header: bytes) -> bytes:
    return b"From: a@example.org\r\n" + header + b"\r\nSubject: ids\r\n\r\nbody\r\n"


def test_message_id_header_is_the_unfolded_trimmed_value() -> None:
    for header, expected in MESSAGE_IDS:
        assert parse(_with_header(header)).message_id_header == expected, header


def test_message_id_header_is_null_only_without_the_header() -> None:
    assert parse(b"From: a@example.org\r\nSubject: none\r\n\r\nbody\r\n").message_id_header is None


def test_imap_header_block_reads_the_same_message_id_as_parse() -> None:
    # A UIDVALIDITY change re-keys stored rows by this value: both readings must agree.
    for header, expected in MESSAGE_IDS:
        assert message_id_of_header_block(header + b"\r\n\r\n") == expected, header
    assert message_id_of_header_block(b"\r\n") is None


def test_a_huge_message_id_is_capped_so_the_row_can_be_indexed() -> None:
    m = parse(_with_header(b"Message-ID: <" + b"x" * 100_000 + b"@example.org>"))
    assert m.message_id_header is not None
    assert len(m.message_id_header) == MAX_MESSAGE_ID_CHARS
    assert m.message_id_header.startswith("<xxx")
