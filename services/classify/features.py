"""What a person can see in a mail: phishing indicators, its category, and model tokens.

Every indicator has a stable machine-readable name that explains itself to a human reading
the API answer (`reply_to_differs_from_sender`, not `R2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import numpy as np

from services.classify.content import gram_hashes, url_shape
from services.classify.mail import MailDoc

BRANDS = {
    "paypal": "paypal.com",
    "apple": "apple.com",
    "microsoft": "microsoft.com",
    "google": "google.com",
    "amazon": "amazon.com",
    "netflix": "netflix.com",
    "facebook": "facebook.com",
    "instagram": "instagram.com",
    "linkedin": "linkedin.com",
    "dropbox": "dropbox.com",
    "docusign": "docusign.com",
    "chase": "chase.com",
    "wellsfargo": "wellsfargo.com",
    "bankofamerica": "bankofamerica.com",
    "dhl": "dhl.com",
    "fedex": "fedex.com",
    "ups": "ups.com",
    "outlook": "outlook.com",
    "office365": "office.com",
}
EXECUTABLE_EXT = {
    "exe",
    "scr",
    "bat",
    "cmd",
    "com",
    "pif",
    "js",
    "jse",
    "vbs",
    "vbe",
    "jar",
    "msi",
    "ps1",
    "hta",
    "lnk",
    "wsf",
    "cpl",
    "reg",
    "dll",
    "iso",
    "img",
}
DOCUMENT_EXT = {"pdf", "doc", "docx", "xls", "xlsx", "txt", "jpg", "jpeg", "png", "zip", "rtf"}
URGENCY = re.compile(
    r"\b(urgent(ly)?|immediate(ly)?|act now|final (notice|warning)|within (24|48|72) hours"
    r"|account (will be|has been) (suspended|closed|locked|terminated|disabled)"
    r"|expires? (today|soon)|last chance|limited time)\b",
)
CREDENTIALS = re.compile(
    r"\b(verify your (account|identity|email|password|information)"
    r"|confirm your (account|identity|password|billing|payment|details)"
    r"|(update|validate) your (account|billing|payment|banking) (information|details)"
    r"|(enter|provide|re-?enter) your (password|pin|login|credentials|social security)"
    r"|log ?in to (restore|unlock|reactivate)|unusual (sign-?in|login) activity)\b",
)
# Every pattern below runs over mail a stranger wrote, so each is linear in its input: tags are
# found with `[^<>]` (a scan stops at the next `<`, so scans never overlap), quantifiers that
# could backtrack are possessive or bounded, and the text and HTML are cut at MAX_SCAN_CHARS
# first. (The old `<[^>]+style...`, `<a\s[^>]*...(.*?)</a>` and `(?:[a-z0-9-]+\.)+` patterns
# rescanned to the end of the input from every `<` or every label: quadratic.)
MAX_SCAN_CHARS = 256 * 1024
# Words and wording are read from the first WORD_CHARS of the visible text (and tags from the
# first WORD_CHARS of the HTML): what a mail asks of its reader comes early, and the rest of a
# long mail costs time, not evidence.
WORD_CHARS = 20000
# An opening tag whose attributes hide what follows it.
_OPEN_TAG = re.compile(r"<([a-z][^\s<>/]*+)([^<>]*+)>", re.IGNORECASE)
_HIDDEN_STYLE = re.compile(
    r"style\s*+=\s*+[\"'][^\"']*?(?:display\s*+:\s*+none|visibility\s*+:\s*+hidden"
    r"|font-size\s*+:\s*+0(?:px|pt|em)?+\s*+[;\"'])",
    re.IGNORECASE,
)
_ZERO_FONT = re.compile(r"size\s*+=\s*+[\"']?+0(?:[\"' ]|$)", re.IGNORECASE)
_VISIBLE_NEXT = re.compile(r"\s*+[^<\s]")
ANCHOR_OPEN = re.compile(r"<a\s[^<>]*+>", re.IGNORECASE)
_HREF = re.compile(r"href\s*+=\s*+[\"']?+([^\"'\s>]++)", re.IGNORECASE)
_ANCHOR_CLOSE = re.compile(r"</a>", re.IGNORECASE)
URL = re.compile(r"https?://[^\s\"'<>()]++", re.I)
# Bounded: a label is at most 63 characters and a name has at most 10 labels before its suffix.
DOMAIN_IN_TEXT = re.compile(
    r"\b((?:[a-z0-9-]{1,63}\.){1,10}(?:com|net|org|info|biz|co|io|us|uk|de))\b"
)
IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
AUTH_FAIL = re.compile(r"\b(spf|dkim|dmarc)\s*+=\s*+(fail|softfail|permerror)\b", re.I)
WORD = re.compile(r"[a-z0-9$][a-z0-9'$_-]{1,24}")
TAG = re.compile(r"<[^<>]++>")

SOCIAL_DOMAINS = {
    "facebookmail.com",
    "linkedin.com",
    "twitter.com",
    "x.com",
    "instagram.com",
    "pinterest.com",
    "reddit.com",
    "tiktok.com",
    "snapchat.com",
    "youtube.com",
    "meetup.com",
    "nextdoor.com",
}
PROMO_SENDER = re.compile(
    r"^(news(letter)?s?|marketing|offers?|deals?|promo(tions?)?|sales|shop)\b"
)
UPDATE_SENDER = re.compile(
    r"^(no-?reply|do-?not-?reply|notifications?|alerts?|billing|receipts?|orders?|accounts?"
    r"|security|support|updates?|mailer-daemon)\b"
)


def _no_grams() -> np.ndarray:
    return np.zeros(0, dtype=np.uint32)


@dataclass
class Features:
    """What the model reads: named tokens, and the character 4-grams as their crc32 hashes
    (`content.gram_hashes`: thousands per mail, so never built as strings)."""

    indicators: list[str]
    category: str
    tokens: list[str] = field(default_factory=list)
    grams: np.ndarray = field(default_factory=_no_grams)


def registrable(host: str) -> str:
    """Approximate registrable domain: the last two labels (three for co.uk-style suffixes)."""
    labels = host.lower().strip(".").split(".")
    if len(labels) >= 3 and len(labels[-2]) <= 3 and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _host(url: str) -> str:
    try:
        return (urlsplit(url if "//" in url else "http://" + url).hostname or "").lower()
    except ValueError:
        return ""


def anchors(html: str) -> list[tuple[str, str]]:
    """(href, inner HTML) of each `<a ...>...</a>`, in one pass over the markup."""
    out: list[tuple[str, str]] = []
    pos = 0
    while (tag := ANCHOR_OPEN.search(html, pos)) is not None:
        close = _ANCHOR_CLOSE.search(html, tag.end())
        if close is None:  # no `</a>` after this one: none after any later one either
            break
        hrefs = _HREF.findall(tag.group())
        if hrefs:  # the last href in the tag, as a greedy `[^>]*href` picked it
            out.append((hrefs[-1], html[tag.end() : close.start()]))
        pos = close.end()
    return out


def hidden_html(html: str) -> bool:
    """Text right after a tag that hides it: display:none, visibility:hidden, a zero size."""
    for tag in _OPEN_TAG.finditer(html):
        attrs = tag.group(2)
        hidden = _HIDDEN_STYLE.search(attrs) is not None or (
            tag.group(1).lower() == "font" and _ZERO_FONT.search(attrs) is not None
        )
        if hidden and _VISIBLE_NEXT.match(html, tag.end()):
            return True
    return False


def _link_indicators(html: str, text: str) -> set[str]:
    found: set[str] = set()
    hosts = [_host(u) for u in URL.findall(text)]
    for href, inner in anchors(html):
        host = _host(href)
        if not host or not href.lower().startswith(("http", "www")):
            continue
        hosts.append(host)
        shown = DOMAIN_IN_TEXT.findall(TAG.sub(" ", inner).lower())
        if shown and all(registrable(d) != registrable(host) for d in shown):
            found.add("link_text_domain_differs_from_target")
    for host in hosts:
        if IPV4.match(host):
            found.add("link_to_ip_address")
        if "xn--" in host:
            found.add("punycode_link")
    return found


def _distance_le1(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _looks_like(name: str, unmasked: str, brand: str) -> bool:
    """A domain name dressed up as the brand: paypa1, rnicrosoft, micros0ft-help, paypall."""
    if unmasked == brand or any(part == brand for part in re.split(r"[-_]", unmasked)):
        return True
    if len(brand) < 5:  # ups, dhl: one letter off is too often an unrelated word
        return False
    return _distance_le1(name, brand) or brand in unmasked


def _sender_indicators(doc: MailDoc) -> set[str]:
    found: set[str] = set()
    domain = doc.from_domain
    if domain:
        reg = registrable(domain)
        name = reg.split(".")[0]
        unmasked = name.translate(str.maketrans("01345", "oleas")).replace("rn", "m")
        for brand, brand_domain in BRANDS.items():
            if reg == brand_domain or reg.endswith("." + brand_domain):
                continue
            if _looks_like(name, unmasked, brand):
                found.add("lookalike_sender_domain")
            shown = re.sub(r"\W", "", doc.from_name.lower())
            if doc.from_name and brand in shown and len(brand) >= 4:
                found.add("sender_name_impersonates_brand")
        reply_domains = {registrable(r.rsplit("@", 1)[-1]) for r in doc.reply_to if "@" in r}
        if reply_domains and reg not in reply_domains:
            found.add("reply_to_differs_from_sender")
    for value in doc.header_values("authentication-results"):
        for method, _ in AUTH_FAIL.findall(value):
            found.add(f"{method.lower()}_failed")
    return found


def _attachment_indicators(doc: MailDoc) -> set[str]:
    found: set[str] = set()
    for name in doc.attachment_names:
        parts = name.lower().strip().rsplit(".", 2)
        if len(parts) >= 2 and parts[-1] in EXECUTABLE_EXT:
            found.add("executable_attachment")
            if len(parts) == 3 and parts[-2] in DOCUMENT_EXT:
                found.add("double_extension_attachment")
    return found


def bounded(doc: MailDoc) -> MailDoc:
    """The mail with its text and HTML cut at MAX_SCAN_CHARS (the same doc when within it).

    What decides a verdict is in the first 256 KB; past that, a body is an attachment in
    disguise or an attack, and every scan below costs time in proportion to what it reads.
    """
    if len(doc.text) <= MAX_SCAN_CHARS and len(doc.html) <= MAX_SCAN_CHARS:
        return doc
    return replace(doc, text=doc.text[:MAX_SCAN_CHARS], html=doc.html[:MAX_SCAN_CHARS])


def indicators(doc: MailDoc) -> list[str]:
    """The phishing and spam indicators present in the mail, sorted by name."""
    doc = bounded(doc)
    found = _link_indicators(doc.html, doc.text) | _sender_indicators(doc)
    found |= _attachment_indicators(doc)
    if doc.html and hidden_html(doc.html):
        found.add("hidden_html_text")
    words = f"{doc.subject}\n{doc.visible_text[:WORD_CHARS]}".lower()
    if URGENCY.search(words):
        found.add("urgency_wording")
    if CREDENTIALS.search(words):
        found.add("credential_request_wording")
    return sorted(found)


def category(doc: MailDoc) -> str:
    """primary | promotions | social | updates | forums, from list headers and the sender."""
    domain = registrable(doc.from_domain) if doc.from_domain else ""
    local = doc.from_email.split("@", 1)[0].lower() if doc.from_email else ""
    precedence = " ".join(doc.header_values("precedence")).lower()
    if domain in SOCIAL_DOMAINS:
        return "social"
    if doc.has_header("list-id") or doc.has_header("list-post") or "list" in precedence:
        return "forums"
    if doc.has_header("list-unsubscribe") or PROMO_SENDER.match(local):
        return "promotions"
    automatic = doc.has_header("auto-submitted") or precedence in ("bulk", "junk")
    if UPDATE_SENDER.match(local) or automatic:
        return "updates"
    return "primary"


# Headers that carry a verdict from someone else's filter: training on them would be cheating.
_SKIP_HEADER_PREFIX = ("x-spam", "x-virus")


def _bucket(name: str, value: float, edges: tuple[float, ...]) -> str:
    for edge in edges:
        if value <= edge:
            return f"{name}<={edge}"
    return f"{name}>{edges[-1]}"


def shape_tokens(doc: MailDoc) -> set[str]:
    """How the mail looks rather than what it says: counts in coarse buckets, layout flags."""
    doc = bounded(doc)
    text = doc.visible_text
    letters = [c for c in text[:5000] if c.isalpha()]
    upper = sum(c.isupper() for c in letters) / max(1, len(letters))
    to = " ".join(doc.header_values("to")).lower()
    out = {
        _bucket("n_urls", len(URL.findall(doc.html or doc.text)), (0, 1, 3, 8)),
        _bucket("upper", round(upper, 2), (0.05, 0.1, 0.2, 0.4)),
        _bucket("exclaim", text.count("!"), (0, 2, 5, 10)),
        _bucket("length", len(text), (200, 1000, 3000, 10000)),
        _bucket("n_to", to.count("@"), (0, 1, 3, 10)),
    }
    subject_letters = [c for c in doc.subject if c.isalpha()]
    if subject_letters and sum(c.isupper() for c in subject_letters) > len(subject_letters) / 2:
        out.add("subject_mostly_caps")
    flags = {
        "html_only": bool(doc.html) and not doc.text.strip(),
        "has_image": "<img" in doc.html.lower(),
        "subject_exclaim": "!" in doc.subject,
        "dollar_amount": bool(re.search(r"\$\d", text)),
        "to_empty": not to,
        "to_undisclosed": "undisclosed" in to,
    }
    out.update(name for name, on in flags.items() if on)
    out.update(f"fn:{w}" for w in WORD.findall(doc.from_name.lower()))
    return out


def tokens(doc: MailDoc, found: list[str]) -> list[str]:
    """The distinct named model tokens: words by where they occur, sender, structure,
    indicators (the character 4-grams are hashed apart: `Features.grams`)."""
    doc = bounded(doc)
    out: set[str] = {f"w:{w}" for w in WORD.findall(doc.visible_text[:WORD_CHARS].lower())}
    out.update(f"s:{w}" for w in WORD.findall(doc.subject.lower()))
    if doc.from_domain:
        out.add(f"fd:{registrable(doc.from_domain)}")
    for name, value in doc.headers:
        key = name.lower()
        if key.startswith(_SKIP_HEADER_PREFIX) or key == "received":
            continue
        out.add(f"h:{key}")
        if key in ("x-mailer", "user-agent", "content-type", "mime-version"):
            out.update(f"{key}:{w}" for w in WORD.findall(value.lower())[:8])
    urls = URL.findall(doc.html or doc.text)[:50]
    for url in urls:
        out.add(f"u:{registrable(_host(url))}")
    out |= url_shape(urls)
    if doc.html:
        out.add("html")
        out.update(f"tag:{t}" for t in re.findall(r"<([a-z]+)", doc.html[:WORD_CHARS].lower()))
    out.update(f"i:{name}" for name in found)
    out |= shape_tokens(doc)
    return sorted(out)


def extract(doc: MailDoc) -> Features:
    doc = bounded(doc)
    found = indicators(doc)
    return Features(
        indicators=found,
        category=category(doc),
        tokens=tokens(doc, found),
        grams=gram_hashes(doc.subject, doc.visible_text),
    )
