"""Model tokens that hold across eras and without headers: character n-grams and URL shape.

Words change with the decade and with every spammer's spelling ("v1agra", "f-r-e-e"); runs
of four characters survive both, and so does how a link looks (a bare IP, a port, a long
host of digits and hyphens, a shortener), whatever its domain is called this year. Both read
the Subject and the visible body only, so a mail that arrives without headers loses nothing
here. Every scan is linear: one pass of `[\\W_]++` and slices over at most GRAM_CHARS of text.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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


def char_grams(subject: str, body: str) -> set[str]:
    """Distinct 4-character runs of the lowercased text, punctuation folded to one space."""
    text = _NOT_WORD.sub(" ", f"{subject} {body[:GRAM_CHARS]}".lower())
    return {"c:" + text[i : i + GRAM] for i in range(len(text) - GRAM + 1)}


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
