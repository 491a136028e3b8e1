"""Model tokens that hold across eras and without headers: character n-grams and URL shape.

Words change with the decade and with every spammer's spelling ("v1agra", "f-r-e-e"); runs
of four characters survive both, and so does how a link looks (a bare IP, a port, a long
host of digits and hyphens, a shortener), whatever its domain is called this year. Both read
the Subject and the visible body only, so a mail that arrives without headers loses nothing
here. Every scan is linear: one pass of `[\\W_]++` and slices over at most GRAM_CHARS of text.
"""

from __future__ import annotations

import re
import zlib
from urllib.parse import urlsplit

import numpy as np

# Enough text for a verdict; n-grams beyond it add cost, not evidence.
GRAM_CHARS = 3000
GRAM = 4
_NOT_WORD = re.compile(r"[\W_]++")
_DIGITS = re.compile(r"\d")
SHORTENERS = {
    "bit.ly",
    "tinyurl.com",
    "t.co",
    "goo.gl",
    "ow.ly",
    "is.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
}
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


GRAM_PREFIX = "c:"


def _gram_text(subject: str, body: str) -> str:
    return _NOT_WORD.sub(" ", f"{subject} {body[:GRAM_CHARS]}".lower())


def char_grams(subject: str, body: str) -> set[str]:
    """Distinct 4-character runs of the lowercased text, punctuation folded to one space."""
    text = _gram_text(subject, body)
    return {GRAM_PREFIX + text[i : i + GRAM] for i in range(len(text) - GRAM + 1)}


def _crc_tables() -> tuple[int, np.ndarray]:
    """crc32 of `c:` + four bytes, as the crc of `c:` + four zero bytes XOR one table per byte.

    A CRC is affine over GF(2) in the bits of a message of fixed length, so each byte's share
    can be tabulated once: crc(P b0 b1 b2 b3) = crc(P 0000) ^ T0[b0] ^ T1[b1] ^ T2[b2] ^ T3[b3].
    """
    prefix = GRAM_PREFIX.encode()
    zero = zlib.crc32(prefix + bytes(GRAM))
    tables = np.zeros((GRAM, 256), dtype=np.uint32)
    for k in range(GRAM):
        for v in range(256):
            probe = bytearray(GRAM)
            probe[k] = v
            tables[k, v] = zlib.crc32(prefix + bytes(probe)) ^ zero
    return zero, tables


_CRC_ZERO, _CRC_TABLES = _crc_tables()


def gram_hashes(subject: str, body: str) -> np.ndarray:
    """crc32 of each distinct `c:` + 4-gram of `char_grams`, without building the strings.

    Equal to `{zlib.crc32(g.encode()) for g in char_grams(subject, body)}`: runs of four ASCII
    characters go through the tables at once; a run with any other character is hashed from
    its UTF-8 bytes one at a time.
    """
    text = _gram_text(subject, body)
    n = len(text) - GRAM + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint32)
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ascii_ = points < 128
    window = ascii_[:n].copy()
    for k in range(1, GRAM):
        window &= ascii_[k : k + n]
    b = np.where(ascii_, points, 0).astype(np.uint8)
    h = np.full(n, _CRC_ZERO, dtype=np.uint32)
    for k in range(GRAM):
        h ^= _CRC_TABLES[k][b[k : k + n]]
    if not window.all():
        for i in np.flatnonzero(~window).tolist():
            gram = (GRAM_PREFIX + text[i : i + GRAM]).encode("utf-8", "surrogatepass")
            h[i] = zlib.crc32(gram)
    return np.unique(h)


def url_shape(urls: list[str]) -> set[str]:
    """How the links look, not where they go: ip host, port, digits, depth, shortener, tld."""
    out: set[str] = set()
    for url in urls[:50]:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            out.add("us:malformed")
            continue
        if not host:
            continue
        labels = host.split(".")
        out.add(f"us:tld:{labels[-1][:10]}")
        if _IPV4.fullmatch(host):
            out.add("us:ip_host")
        elif _DIGITS.search(labels[0]):
            out.add("us:digits_in_host")
        if port is not None:
            out.add("us:port")
        if len(labels) > 4:
            out.add("us:many_labels")
        if len(host) > 30 or host.count("-") >= 2:
            out.add("us:long_host")
        if host in SHORTENERS:
            out.add("us:shortener")
        if "@" in parts.netloc:
            out.add("us:userinfo")
        if parts.query:
            out.add("us:query")
        if parts.path.count("/") > 3:
            out.add("us:deep_path")
        if parts.scheme == "https":
            out.add("us:https")
    return out
