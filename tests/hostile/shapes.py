"""Pathological inputs, one generator per shape: `make(n)` grows the attack with n.

docs/security.md lists each shape with what postroom answers and its measured cost
(scripts/security_table.py prints that table from these generators).
"""

from __future__ import annotations

_MAIL_HEAD = b"From: a@example.org\r\nTo: b@example.net\r\nMIME-Version: 1.0\r\n"


# JSON bodies (api/limits.py) ----------------------------------------------------------------
def json_escaped_quotes(n: int) -> bytes:
    """An unterminated string of n escaped quotes, then 33 open brackets."""
    return b'{"a": "' + b'\\"' * n + b"[" * 33


def json_escaped_quotes_after_brackets(n: int) -> bytes:
    """33 open brackets, then an unterminated string of n escaped quotes."""
    return b"[" * 33 + b'"' + b'\\"' * n


def json_nested(n: int) -> bytes:
    """n open brackets, never closed."""
    return b"[" * n


def json_flat_brackets(n: int) -> bytes:
    """n empty arrays side by side: no depth, all brackets."""
    return b"[" + b"[]," * n + b"[]]"


def json_many_strings(n: int) -> bytes:
    """n one-element arrays of strings: a string (and a bracket) every few bytes."""
    return b"[" + b'["a"],' * n + b"[" * 32


# HTML (services/messages/html_text.py, services/classify/features.py) ---------------
def html_lt(n: int) -> str:
    """n `<` characters and nothing else."""
    return "<" * n


def html_lt_a(n: int) -> str:
    """`<a` n times: a tag that never closes."""
    return "<a" * n


def html_anchor_open(n: int) -> str:
    """Anchors that are never closed by `</a>`."""
    return '<a href="http://x.example/">' * n


def html_style_open(n: int) -> str:
    """Tags with a style attribute whose quote never closes."""
    return '<p style="' * n


def html_unclosed_comment(n: int) -> str:
    """`<!--` n times, never closed."""
    return "<!--" * n


def text_domain_labels(n: int) -> str:
    """A dotted name of n labels and no known suffix, as link text."""
    return '<a href="http://x.example/">' + "a." * n + "</a>"


def text_long_word(n: int) -> str:
    """One word of 10n characters, no spaces."""
    return "x" * (10 * n)


def text_punctuation_runs(n: int) -> str:
    """Letters between runs of punctuation and underscores, 10n characters."""
    return "a_-!._,?;:" * n


def text_url_shapes(n: int) -> str:
    """One link whose host has n hyphenated labels and whose path has n segments."""
    return "http://user@" + "a-1." * n + "com:8080/" + "x/" * n + "?q=1"


# Mail (services/messages/mime.py) ---------------------------------------------------------
def header_spaces(n: int) -> bytes:
    """A Subject of n spaces ending in a line break with nothing folded after it."""
    return _MAIL_HEAD + b"Subject: a" + b" " * n + b"\r\n\r\nbody\r\n"


def header_continuations(n: int) -> bytes:
    """A Subject folded over n continuation lines."""
    return _MAIL_HEAD + b"Subject: a" + b"\r\n b" * n + b"\r\n\r\nbody\r\n"


def header_message_id_lt(n: int) -> bytes:
    """Message-ID and References of n `<` each."""
    return _MAIL_HEAD + b"Message-ID: " + b"<" * n + b"\r\nReferences: " + b"<" * n + b"\r\n\r\nx"


def mime_nested(n: int) -> bytes:
    """multipart/mixed nested n levels deep."""
    out = [_MAIL_HEAD]
    for i in range(n):
        out.append(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nhi\r\n")
    out.extend(b"--b%d--\r\n" % i for i in reversed(range(n)))
    return b"".join(out)


def mime_parts(n: int) -> bytes:
    """One multipart with n text parts."""
    part = b"--X\r\nContent-Type: text/plain\r\n\r\npart\r\n"
    head = _MAIL_HEAD + b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
    return head + part * n + b"--X--\r\n"


def mail_nul_bytes(n: int) -> bytes:
    """A body of n NUL bytes (and NULs in the Subject)."""
    return _MAIL_HEAD + b"Subject: \x00\x00\r\n\r\n" + b"\x00" * n


def content_type_params(n: int) -> bytes:
    """A multipart Content-Type with n `; a=b` parameters before its boundary."""
    params = b"; a=b" * n
    head = _MAIL_HEAD + b"Content-Type: multipart/mixed" + params + b"; boundary=X\r\n\r\n"
    return head + b"--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n--X--\r\n"


def disposition_params(n: int) -> bytes:
    """A part whose Content-Disposition has n empty parameters, folded over lines."""
    params = b";\r\n ;" * n
    head = _MAIL_HEAD + b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
    part = b"Content-Type: text/plain\r\nContent-Disposition: attachment" + params
    return head + part + b'; filename="a.txt"\r\n\r\nhi\r\n--X--\r\n'


def mail_long_line(n: int) -> bytes:
    """A body of one line without a space."""
    return _MAIL_HEAD + b"\r\n" + b"x" * n


def mail_html_lt_a(n: int) -> bytes:
    """An HTML body of n `<a`."""
    return _MAIL_HEAD + b"Content-Type: text/html\r\n\r\n" + b"<a" * n
